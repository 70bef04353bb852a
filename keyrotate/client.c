/* The admin socket: finding it in the configuration, and HTTP/1.1 + JSON over it with libcurl. */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <curl/curl.h>
#include <ini.h>

/* An admin answer is a few hundred bytes per key; anything near this is not our daemon. */
#define ANSWER_MAX        (8u << 20)
#define CONNECT_TIMEOUT_S 10L
/* Generous: a rotation may generate a key in a slow HSM (RSA can take seconds). */
#define REQUEST_TIMEOUT_S 120L

struct answer {
	char *data;
	size_t len;
	bool too_large;
};

static int on_ini_value(void *user, const char *section, const char *name, const char *value)
{
	char **socket = user;

	if (strcmp(section, "admin") != 0 || strcmp(name, "socket") != 0)
		return 1;
	free(*socket);
	*socket = strdup(value);
	return 1;
}

int client_socket_from_config(const char *path, char **ret)
{
	char *socket = NULL;
	FILE *f;

	f = fopen(path, "re");
	if (!f)
		return -errno;
	/* The same knobs as lib/conf.c, so both read the file alike; they are process globals. */
	ini_allow_multiline = false;
	ini_stop_on_first_error = false;
	ini_use_stack = false;
	ini_max_line = 4096;
	/* Lines the daemon would reject are its business: only [admin] socket matters here. */
	(void)ini_parse_file(f, on_ini_value, &socket);
	fclose(f);
	if (!socket || !*socket) {
		free(socket);
		return -ENODATA;
	}
	*ret = socket;
	return 0;
}

char *client_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *copy;

	if (!e)
		return NULL;
	copy = strdup(e);
	curl_free(e);
	return copy;
}

bool client_unreachable(int r)
{
	switch (-r) {
	case ENOENT:
	case ENOTDIR:
	case ECONNREFUSED:
	case EACCES:
	case EPERM:
	case ENOTSOCK:
	case EPROTOTYPE:
		return true;
	default:
		return false;
	}
}

static size_t on_data(char *ptr, size_t size, size_t n, void *user)
{
	struct answer *a = user;
	size_t len = size * n;
	char *grown;

	if (len > ANSWER_MAX - a->len) {
		a->too_large = true;
		return 0;
	}
	grown = realloc(a->data, a->len + len + 1);
	if (!grown)
		return 0;
	memcpy(grown + a->len, ptr, len);
	a->data = grown;
	a->len += len;
	a->data[a->len] = '\0';
	return len;
}

static const char *connect_hint(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		return " (is tokensignd running, with an [admin] socket configured?)";
	case ECONNREFUSED:
		return " (nothing listens there: is tokensignd running?)";
	case EACCES:
	case EPERM:
		return " (no permission: admins need to be in the socket's group)";
	default:
		return "";
	}
}

/* Maps a transfer that produced no HTTP answer to an errno, saying why once. */
static int transfer_failed(CURL *curl, CURLcode code, const char *socket, const char *errbuf)
{
	long os_errno = 0;

	if (code == CURLE_COULDNT_CONNECT) {
		curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno == 0)
			os_errno = ECONNREFUSED;
		fprintf(stderr, "keyrotate: cannot connect to the admin socket %s: %s%s\n", socket,
		        strerror((int)os_errno), connect_hint((int)os_errno));
		return -(int)os_errno;
	}
	fprintf(stderr, "keyrotate: talking to tokensignd at %s: %s\n", socket,
	        *errbuf ? errbuf : curl_easy_strerror(code));
	if (code == CURLE_OPERATION_TIMEDOUT)
		return -ETIMEDOUT;
	return -EIO;
}

/* The daemon said no: its own words, which are meant for the operator. */
int client_refusal(long status, const json_t *body, const char *about)
{
	const char *code = NULL, *message = NULL;

	if (json_is_object(body)) {
		code = json_string_value(json_object_get(body, "error"));
		message = json_string_value(json_object_get(body, "message"));
	}
	fprintf(stderr, "keyrotate: %s%s", about ? about : "", about ? ": " : "");
	if (!message)
		fprintf(stderr, "the daemon answered HTTP %ld%s%s\n", status, code ? " " : "",
		        code ? code : "");
	else if (status == 403)
		fprintf(stderr, "the daemon refused: %s\n", message);
	else
		fprintf(stderr, "%s (HTTP %ld%s%s)\n", message, status, code ? " " : "",
		        code ? code : "");
	return -EREMOTEIO;
}

static int curl_setup(CURL *curl, const char *socket, const char *method, const char *url,
                      const char *body, struct curl_slist *headers, struct answer *a, char *errbuf)
{
	int c = 0;

	/* Each setopt can only fail for lack of memory or an old libcurl; check them together. */
	c |= curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket);
	c |= curl_easy_setopt(curl, CURLOPT_URL, url);
	c |= curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http");
	c |= curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	c |= curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	c |= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	c |= curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	c |= curl_easy_setopt(curl, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	c |= curl_easy_setopt(curl, CURLOPT_USERAGENT, "keyrotate/" TOKENSIGN_VERSION);
	c |= curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	c |= curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	c |= curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	c |= curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
	if (body)
		c |= curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	c |= curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	return c == 0 ? 0 : -ENOMEM;
}

static int answer_parse(long status, const struct answer *a, const char *about, json_t **ret)
{
	json_t *v = a->len ? json_loadb(a->data, a->len, 0, NULL) : NULL;

	if (status < 200 || status > 299) {
		client_refusal(status, v, about);
		json_decref(v);
		return -EREMOTEIO;
	}
	if (!v) {
		fprintf(stderr, "keyrotate: the daemon's answer (HTTP %ld) is not JSON\n", status);
		return -EBADMSG;
	}
	*ret = v;
	return 0;
}

/* One HTTP exchange: on 0, *ret_status and the answer's bytes in *a (the caller frees a->data);
 * otherwise a negative errno, having said why. */
static int exchange(const char *socket, const char *method, const char *path, const json_t *body,
                    long *ret_status, struct answer *a)
{
	char errbuf[CURL_ERROR_SIZE] = "", url[1024];
	struct curl_slist *headers = NULL, *h;
	char *text = NULL;
	CURL *curl = NULL;
	CURLcode code;
	int r;

	/* libcurl says "couldn't connect" for an over-long path; tell the real reason. */
	if (strlen(socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
		fprintf(stderr, "keyrotate: admin socket path too long: %s\n", socket);
		return -ENAMETOOLONG;
	}
	if ((size_t)snprintf(url, sizeof(url), "http://localhost%s", path) >= sizeof(url)) {
		fprintf(stderr, "keyrotate: request path too long\n");
		return -ENAMETOOLONG;
	}
	r = -ENOMEM;
	if (body && !(text = json_dumps(body, JSON_COMPACT)))
		goto out;
	if (!(headers = curl_slist_append(NULL, "Accept: application/json")))
		goto out;
	if (body) {
		if (!(h = curl_slist_append(headers, "Content-Type: application/json")))
			goto out;
		headers = h;
	}
	curl = curl_easy_init();
	if (!curl || curl_setup(curl, socket, method, url, text, headers, a, errbuf) < 0)
		goto out;
	code = curl_easy_perform(curl);
	if (code != CURLE_OK) {
		r = a->too_large ? -EMSGSIZE : transfer_failed(curl, code, socket, errbuf);
		if (a->too_large)
			fprintf(stderr, "keyrotate: the daemon's answer is larger than %u bytes\n",
			        ANSWER_MAX);
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, ret_status);
	r = 0;
out:
	if (r == -ENOMEM)
		fprintf(stderr, "keyrotate: out of memory\n");
	curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	free(text);
	return r;
}

int client_call(const char *socket, const char *method, const char *path, const json_t *body,
                const char *about, json_t **ret)
{
	struct answer a = {0};
	long status = 0;
	int r;

	r = exchange(socket, method, path, body, &status, &a);
	if (r == 0)
		r = answer_parse(status, &a, about, ret);
	free(a.data);
	return r;
}

int client_call_status(const char *socket, const char *method, const char *path, const json_t *body,
                       long *ret_status, json_t **ret)
{
	struct answer a = {0};
	long status = 0;
	json_t *v = NULL;
	int r;

	r = exchange(socket, method, path, body, &status, &a);
	if (r == 0 && status >= 200 && status <= 299)
		r = answer_parse(status, &a, NULL, &v);
	else if (r == 0 && a.len)
		v = json_loadb(a.data, a.len, 0, NULL);
	free(a.data);
	if (r < 0)
		return r;
	*ret_status = status;
	*ret = v;
	return 0;
}

int client_issuer_path(char *path, size_t size, const char *issuer, const char *verb)
{
	char *name = client_escape(issuer);
	int r;

	if (!name)
		return -ENOMEM;
	r = snprintf(path, size, "/v1/issuers/%s/%s", name, verb);
	free(name);
	if (r < 0 || (size_t)r >= size) {
		fprintf(stderr, "keyrotate: issuer name too long\n");
		return -ENAMETOOLONG;
	}
	return 0;
}
