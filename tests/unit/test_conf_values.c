/* Unit tests of lib/conf_values.c: the single-value parsers behind the configuration loader. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>

#include "conf_values.h"
#include "unit.h"

static void test_names(void)
{
	CHECK(conf_issuer_name_valid("main"));
	CHECK(conf_issuer_name_valid("a"));
	CHECK(conf_issuer_name_valid("svc-2"));
	CHECK(conf_issuer_name_valid("-"));
	CHECK(conf_issuer_name_valid("abcdefghijklmnopqrstuvwxyz-01234")); /* 32 */
	CHECK(!conf_issuer_name_valid("abcdefghijklmnopqrstuvwxyz-012345"));
	CHECK(!conf_issuer_name_valid(""));
	CHECK(!conf_issuer_name_valid("Main"));
	CHECK(!conf_issuer_name_valid("a_b"));
	CHECK(!conf_issuer_name_valid("a.b"));
	CHECK(!conf_issuer_name_valid("a/b"));
	CHECK(!conf_issuer_name_valid("a b"));
	CHECK(!conf_issuer_name_valid("caf\xc3\xa9"));

	CHECK(conf_token_type_valid("JWT"));
	CHECK(conf_token_type_valid("at+jwt"));
	CHECK(conf_token_type_valid("logout+jwt"));
	CHECK(conf_token_type_valid("secevent+jwt"));
	CHECK(!conf_token_type_valid(""));
	CHECK(!conf_token_type_valid("a b"));
	CHECK(!conf_token_type_valid("a\"b"));
	CHECK(!conf_token_type_valid("a\\b"));
	CHECK(!conf_token_type_valid("a,b"));
	CHECK(!conf_token_type_valid("caf\xc3\xa9"));
	{
		char t[66];
		memset(t, 'a', 65);
		t[65] = '\0';
		CHECK(!conf_token_type_valid(t));
		t[64] = '\0';
		CHECK(conf_token_type_valid(t));
	}

	CHECK(conf_text_printable("https://login.example.com/main"));
	CHECK(conf_text_printable(""));
	CHECK(conf_text_printable("caf\xc3\xa9"));
	CHECK(!conf_text_printable("a\tb"));
	CHECK(!conf_text_printable("a\nb"));
	CHECK(!conf_text_printable("a\x7f"));
	CHECK(!conf_text_printable("\x1b[31m"));
}

static void test_numbers(void)
{
	uint32_t u = 4242;
	mode_t m = 04242;

	CHECK_INT(conf_parse_u32("0", &u), 0);
	CHECK_INT(u, 0);
	CHECK_INT(conf_parse_u32("1234", &u), 0);
	CHECK_INT(u, 1234);
	CHECK_INT(conf_parse_u32("4294967294", &u), 0);
	CHECK_U64(u, 4294967294ULL);
	u = 4242;
	CHECK_INT(conf_parse_u32("4294967295", &u), -EINVAL); /* (uid_t)-1 means "no change" */
	CHECK_INT(conf_parse_u32("4294967296", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("99999999999999999999999", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("-1", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("+1", &u), -EINVAL);
	CHECK_INT(conf_parse_u32(" 1", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("1 ", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("0x10", &u), -EINVAL);
	CHECK_INT(conf_parse_u32("1e3", &u), -EINVAL);
	CHECK_INT(u, 4242);

	CHECK_INT(conf_parse_mode("0660", &m), 0);
	CHECK_INT(m, 0660);
	CHECK_INT(conf_parse_mode("600", &m), 0);
	CHECK_INT(m, 0600);
	CHECK_INT(conf_parse_mode("0777", &m), 0);
	CHECK_INT(m, 0777);
	m = 04242;
	CHECK_INT(conf_parse_mode("01777", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("4755", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("0888", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("", &m), -EINVAL);
	CHECK_INT(conf_parse_mode(" 0660", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("-0660", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("0o660", &m), -EINVAL);
	CHECK_INT(conf_parse_mode("rw-rw----", &m), -EINVAL);
	CHECK_INT(m, 04242);
}

static void check_listen_ok(const char *s, int family, const char *ip, uint16_t port)
{
	struct listen_conf l;
	char buf[INET6_ADDRSTRLEN] = "";
	int r = conf_parse_listen(s, &l);

	if (r != 0)
		fprintf(stderr, "    refused: \"%s\"\n", s);
	CHECK_INT(r, 0);
	if (r != 0)
		return;
	CHECK_INT(l.addr.ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&l.addr;
		CHECK_INT(l.addr_len, sizeof(*a));
		CHECK_INT(ntohs(a->sin_port), port);
		inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&l.addr;
		CHECK_INT(l.addr_len, sizeof(*a));
		CHECK_INT(ntohs(a->sin6_port), port);
		inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
	}
	CHECK_STR(buf, ip);
}

static void test_listen(void)
{
	static const char *const bad[] = {
	    "",
	    "127.0.0.1",
	    "127.0.0.1:",
	    "127.0.0.1:0",
	    "127.0.0.1:65536",
	    "127.0.0.1:70000",
	    "127.0.0.1:-1",
	    "127.0.0.1:+80",
	    "127.0.0.1: 80",
	    "127.0.0.1:80 ",
	    "localhost:80",
	    "example.com:443",
	    ":8080",
	    "::1:8080",
	    "[::1]",
	    "[::1]8080",
	    "[::1]:",
	    "[]:80",
	    "[127.0.0.1]:80",
	    "[::1:80",
	    "256.1.1.1:80",
	    "1.2.3:80",
	    "*:80",
	    "[fe80::1%lo]:80",
	    "0x7f.0.0.1:80",
	};
	struct listen_conf l;

	check_listen_ok("127.0.0.1:8080", AF_INET, "127.0.0.1", 8080);
	check_listen_ok("0.0.0.0:443", AF_INET, "0.0.0.0", 443);
	check_listen_ok("10.1.2.3:1", AF_INET, "10.1.2.3", 1);
	check_listen_ok("127.0.0.1:65535", AF_INET, "127.0.0.1", 65535);
	check_listen_ok("[::1]:8443", AF_INET6, "::1", 8443);
	check_listen_ok("[::]:80", AF_INET6, "::", 80);
	check_listen_ok("[2001:db8::1]:8080", AF_INET6, "2001:db8::1", 8080);
	check_listen_ok("[::ffff:127.0.0.1]:80", AF_INET6, "::ffff:127.0.0.1", 80);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = conf_parse_listen(bad[i], &l);
		if (r != -EINVAL)
			fprintf(stderr, "    accepted: \"%s\"\n", bad[i]);
		CHECK_INT(r, -EINVAL);
	}
}

static void check_list(const char *s, size_t n, const char *const *items)
{
	char **v = NULL;
	size_t got = 0;
	int r = conf_split_list(s, &v, &got);

	CHECK_INT(r, 0);
	CHECK_INT(got, n);
	for (size_t i = 0; r == 0 && i < n && i < got; i++)
		CHECK_STR(v[i], items[i]);
	if (r == 0)
		conf_free_strv(v, got);
}

static void test_lists(void)
{
	char **v = (char **)&v;
	size_t n = 4242;

	check_list("a", 1, (const char *const[]){"a"});
	check_list("  a  ", 1, (const char *const[]){"a"});
	check_list("api://orders, api://billing", 2,
	           (const char *const[]){"api://orders", "api://billing"});
	check_list("a,b,c", 3, (const char *const[]){"a", "b", "c"});
	check_list("JWT ,\tat+jwt", 2, (const char *const[]){"JWT", "at+jwt"});
	check_list("user:a b", 1, (const char *const[]){"user:a b"}); /* inner blanks stay */
	CHECK_INT(conf_split_list("", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list(" ", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list(",", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list("a,", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list(",a", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list("a,,b", &v, &n), -EINVAL);
	CHECK_INT(conf_split_list("a, ,b", &v, &n), -EINVAL);
	CHECK(v == (char **)&v);
	CHECK_INT(n, 4242);
}

static void check_allow(const char *item, int r_expected, enum allow_kind kind, uint32_t id)
{
	struct allow_rule rule = {(enum allow_kind)99, 4242};
	const char *why = NULL;
	int r = conf_parse_allow_item(item, &rule, &why);

	if (r != r_expected)
		fprintf(stderr, "    item: \"%s\"\n", item);
	CHECK_INT(r, r_expected);
	if (r_expected == 0 && r == 0) {
		CHECK_INT(rule.kind, kind);
		CHECK_INT(rule.id, id);
	} else if (r_expected != 0) {
		CHECK(why != NULL && why[0] != '\0');
	}
}

static void test_allow(void)
{
	check_allow("*", 0, ALLOW_ANY, 0);
	check_allow("uid:0", 0, ALLOW_UID, 0);
	check_allow("uid:1234", 0, ALLOW_UID, 1234);
	check_allow("gid:5678", 0, ALLOW_GID, 5678);
	check_allow("user:root", 0, ALLOW_UID, 0);
	check_allow("group:root", 0, ALLOW_GID, 0);
	check_allow("user:no-such-user-tokensign", -ENOENT, ALLOW_ANY, 0);
	check_allow("group:no-such-group-tokensign", -ENOENT, ALLOW_ANY, 0);
	check_allow("user:", -ENOENT, ALLOW_ANY, 0);
	check_allow("uid:", -EINVAL, ALLOW_ANY, 0);
	check_allow("uid:x", -EINVAL, ALLOW_ANY, 0);
	check_allow("uid:-1", -EINVAL, ALLOW_ANY, 0);
	check_allow("uid:4294967295", -EINVAL, ALLOW_ANY, 0);
	check_allow("gid: 5", -EINVAL, ALLOW_ANY, 0);
	check_allow("**", -EINVAL, ALLOW_ANY, 0);
	check_allow("root", -EINVAL, ALLOW_ANY, 0);
	check_allow("USER:root", -EINVAL, ALLOW_ANY, 0);
	check_allow("users:root", -EINVAL, ALLOW_ANY, 0);
	check_allow("", -EINVAL, ALLOW_ANY, 0);
}

/* The origin of a URL, or -1 when it has none we would publish. */
static long long origin(const char *url)
{
	size_t n = 99;

	return conf_url_origin_len(url, &n) == 0 ? (long long)n : -1;
}

static void test_url_origin(void)
{
	CHECK_INT(origin("https://login.example.test/main"), 26);
	CHECK_INT(origin("https://login.example.test"), 26);
	CHECK_INT(origin("http://a.example:8443/x?y"), 21);
	CHECK_INT(origin("https://[::1]:8080#f"), 18);
	CHECK_INT(origin("https://h?q"), 9);
	CHECK_INT(origin("https://"), -1);
	CHECK_INT(origin("https:///path"), -1);
	CHECK_INT(origin("https://user@host/"), -1);
	CHECK_INT(origin("https://a b/"), -1);
	CHECK_INT(origin("https://h%2f/"), -1);
	CHECK_INT(origin("ftp://host/"), -1);
	CHECK_INT(origin("my-service"), -1);
	CHECK_INT(origin("HTTPS://host/"), -1);
	CHECK_INT(origin(""), -1);
}

int main(void)
{
	test_url_origin();
	test_names();
	test_numbers();
	test_listen();
	test_lists();
	test_allow();
	return unit_finish("conf_values");
}
