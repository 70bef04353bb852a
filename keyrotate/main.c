/* keyrotate: options, the subcommand table and exit codes; the work is in one file per command. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "client.h"
#include "keyrotate.h"

static const struct command {
	const char *name;
	int (*fn)(int argc, char **argv, const struct opts *o);
	const char *help;
	const char *args; /* as in the usage line */
	unsigned options; /* OPT_* that make sense here */
	int min_args, max_args;
	bool levels; /* a monitoring plugin: exits with its enum level, not EXIT_* */
} commands[] = {
    {"list", list_keys, list_help, "[ISSUER]", OPT_JSON, 0, 1, false},
    {"status", show_status, status_help, "", OPT_JSON, 0, 0, true},
    {"rotate", rotate_issuer, rotate_help, "ISSUER", OPT_JSON | OPT_NOW | OPT_YES, 1, 1, false},
    {"revoke", revoke_key, revoke_help, "ISSUER KID", OPT_JSON | OPT_YES, 2, 2, false},
    {"purge", purge_issuer, purge_help, "ISSUER", OPT_JSON | OPT_YES, 1, 1, false},
};

struct args {
	const char *config, *socket;
	bool help, version;
	unsigned given; /* OPT_* on the command line */
	char **pos;     /* the command and its arguments, options taken out */
	int n_pos;
};

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: keyrotate [-c FILE | --socket PATH] [--json] [--yes] [--now] COMMAND [ARGS]\n"
	    "\n"
	    "Lists, rotates, revokes and purges the signing keys of a running tokensignd, through\n"
	    "its admin socket.\n"
	    "\n"
	    "Commands:\n"
	    "  list [ISSUER]       every key of every issuer (or of one): state and schedule\n"
	    "  status              health: token, each issuer's active key and next rotation,\n"
	    "                      degraded states; exits as a monitoring plugin\n"
	    "  rotate ISSUER       start a rotation (--now: switch at once)\n"
	    "  revoke ISSUER KID   emergency: remove a key from the JWKS and destroy it now\n"
	    "  purge ISSUER        destroy the keys of an issuer no longer configured\n"
	    "  help [COMMAND]      this help, or a command's\n"
	    "\n"
	    "Options (before or after the command):\n"
	    "  -c, --config FILE   find the admin socket in FILE's [admin] section\n"
	    "                      (default: " DEFAULT_CONFIG ")\n"
	    "      --socket PATH   the admin socket itself (default: the configuration's,\n"
	    "                      else " DEFAULT_SOCKET ")\n"
	    "      --json          print the daemon's answer as JSON\n"
	    "      --yes           do not ask for confirmation (rotate --now, revoke, purge)\n"
	    "      --now           rotate: switch to the pending key at once\n"
	    "  -h, --help          show this help; COMMAND --help shows the command's\n"
	    "      --version       show the version\n"
	    "\n"
	    "Exit status: 0 done, 1 refused or failed, 2 usage error, 3 daemon unreachable;\n"
	    "status: 0 ok, 1 warning, 2 critical, 3 unknown (also unreachable or usage error).\n");
}

static void command_usage(const struct command *cmd, FILE *out)
{
	fprintf(out, "Usage: keyrotate [-c FILE | --socket PATH]%s%s%s %s%s%s\n\n%s\nOptions:\n",
	        cmd->options & OPT_JSON ? " [--json]" : "",
	        cmd->options & OPT_NOW ? " [--now]" : "", cmd->options & OPT_YES ? " [--yes]" : "",
	        cmd->name, *cmd->args ? " " : "", cmd->args, cmd->help);
	fprintf(out, "  -c, --config FILE   find the admin socket in FILE's [admin] section\n"
	             "      --socket PATH   the admin socket itself\n");
	if (cmd->options & OPT_JSON)
		fprintf(out, "      --json          print the daemon's answer as JSON\n");
	if (cmd->options & OPT_NOW)
		fprintf(out, "      --now           switch to the pending key at once\n");
	if (cmd->options & OPT_YES)
		fprintf(out, "      --yes           do not ask for confirmation\n");
	fprintf(out, "  -h, --help          show this help\n");
}

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("keyrotate: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'keyrotate --help'.\n", stderr);
	return -EINVAL;
}

static int parse(int argc, char **argv, struct args *a)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'}, {"socket", required_argument, NULL, 'S'},
	    {"json", no_argument, NULL, 'j'},         {"yes", no_argument, NULL, 'y'},
	    {"now", no_argument, NULL, 'n'},          {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},      {0},
	};
	bool bad = false;
	int c;

	a->pos = calloc((size_t)argc + 1, sizeof(*a->pos));
	if (!a->pos) {
		fprintf(stderr, "keyrotate: out of memory\n");
		return -ENOMEM;
	}
	/* The leading '-' hands back the command and its arguments in order (as 1) while options
	 * may stand anywhere, even with POSIXLY_CORRECT set; "--" ends the options (for a KID
	 * that starts with '-'). */
	while ((c = getopt_long(argc, argv, "-c:h", options, NULL)) != -1) {
		switch (c) {
		case 1:
			a->pos[a->n_pos++] = optarg;
			break;
		case 'c':
			a->config = optarg;
			break;
		case 'S':
			a->socket = optarg;
			break;
		case 'j':
			a->given |= OPT_JSON;
			break;
		case 'y':
			a->given |= OPT_YES;
			break;
		case 'n':
			a->given |= OPT_NOW;
			break;
		case 'h':
			a->help = true;
			break;
		case 'V':
			a->version = true;
			break;
		default: /* getopt said what was wrong; go on to learn the command's name */
			bad = true;
			break;
		}
	}
	while (optind < argc)
		a->pos[a->n_pos++] = argv[optind++];
	if (bad) {
		fputs("Try 'keyrotate --help'.\n", stderr);
		return -EINVAL;
	}
	return 0;
}

static int options_check(const struct command *cmd, unsigned given)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{OPT_JSON, "--json"}, {OPT_YES, "--yes"}, {OPT_NOW, "--now"}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if ((given & names[i].bit) && !(cmd->options & names[i].bit))
			return usage_error("%s does not apply to %s", names[i].name, cmd->name);
	/* Only a switch at once needs the operator's word; --yes anywhere else hides a mistake. */
	if (cmd->fn == rotate_issuer && (given & OPT_YES) && !(given & OPT_NOW))
		return usage_error("%s applies to rotate only with --now", "--yes");
	return 0;
}

static int arguments_check(const struct command *cmd, int n)
{
	if (n >= cmd->min_args && n <= cmd->max_args)
		return 0;
	fprintf(stderr, "keyrotate: %s\nUsage: keyrotate %s%s%s\nTry 'keyrotate %s --help'.\n",
	        n < cmd->min_args ? "missing argument" : "too many arguments", cmd->name,
	        *cmd->args ? " " : "", cmd->args, cmd->name);
	return -EINVAL;
}

/* --socket wins, then -c FILE, then the default configuration if we may read it. */
static int socket_resolve(const struct args *a, char **ret)
{
	const char *fixed = a->socket;
	char *path;
	int r;

	if (!fixed && a->config) {
		r = client_socket_from_config(a->config, ret);
		if (r == -ENODATA)
			fprintf(stderr, "keyrotate: %s: no 'socket' in an [admin] section\n",
			        a->config);
		else if (r < 0)
			fprintf(stderr, "keyrotate: cannot read %s: %s\n", a->config, strerror(-r));
		return r;
	}
	if (!fixed && client_socket_from_config(DEFAULT_CONFIG, ret) == 0)
		return 0;
	if (!(path = strdup(fixed ? fixed : DEFAULT_SOCKET)))
		return -ENOMEM;
	*ret = path;
	return 0;
}

/* "help", "help COMMAND", "--help", "COMMAND --help": all on stdout, exit 0. */
static int help(const struct args *a)
{
	bool verb = a->n_pos > 0 && strcmp(a->pos[0], "help") == 0;
	const char *name = NULL;
	const struct command *cmd;

	if (verb && a->n_pos > 2)
		return usage_error("%s takes one COMMAND at most", "help");
	if (verb && a->n_pos == 2)
		name = a->pos[1];
	else if (!verb && a->n_pos > 0)
		name = a->pos[0];
	if (!name) {
		usage(stdout);
		return 0;
	}
	if (!(cmd = command_find(name)))
		return usage_error("unknown command '%s'", name);
	command_usage(cmd, stdout);
	return 0;
}

static int run_command(const struct args *a)
{
	const struct command *cmd = command_find(a->pos[0]);
	struct opts o = {
	    .json = a->given & OPT_JSON, .yes = a->given & OPT_YES, .now = a->given & OPT_NOW};
	char *socket = NULL;
	int r;

	if (!cmd)
		return usage_error("unknown command '%s'", a->pos[0]);
	if ((r = options_check(cmd, a->given)) < 0 || (r = arguments_check(cmd, a->n_pos - 1)) < 0)
		return r;
	if ((r = socket_resolve(a, &socket)) < 0)
		return -ECANCELED; /* said why; a file we cannot read is not an unreachable daemon
		                    */
	o.socket = socket;
	r = cmd->fn(a->n_pos - 1, a->pos + 1, &o);
	free(socket);
	return r;
}

/* cmd: the command on the command line, NULL when none or unknown. */
static int exit_code(const struct command *cmd, int r)
{
	if (cmd && cmd->levels)
		return r >= 0 && r < LEVEL_UNKNOWN ? r : LEVEL_UNKNOWN;
	if (r >= 0)
		return EXIT_DONE;
	if (r == -EINVAL)
		return EXIT_USAGE;
	if (client_unreachable(r))
		return EXIT_UNREACHABLE;
	return EXIT_FAILED;
}

/* A table cut short (full disk, closed pipe) must not look like success. */
static int output_check(int r)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return r;
	fprintf(stderr, "keyrotate: writing the output failed\n");
	return r >= 0 ? -EIO : r;
}

static int run(int argc, char **argv)
{
	const struct command *cmd;
	struct args a = {0};
	int code, r;

	if ((r = parse(argc, argv, &a)) < 0)
		goto out;
	if (a.version) {
		printf("keyrotate %s\n", TOKENSIGN_VERSION);
		goto out;
	}
	if (a.help || (a.n_pos > 0 && strcmp(a.pos[0], "help") == 0)) {
		r = help(&a);
		goto out;
	}
	if (a.n_pos == 0) {
		usage(stderr);
		r = -EINVAL;
		goto out;
	}
	r = run_command(&a);
out:
	r = output_check(r);
	/* Even a usage error exits as the command does: status's is "unknown" (3). */
	cmd = a.n_pos > 0 ? command_find(a.pos[0]) : NULL;
	code = exit_code(cmd, r);
	free(a.pos);
	return code;
}

int main(int argc, char **argv)
{
	int code;

	if (curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK) {
		fprintf(stderr, "keyrotate: cannot initialise libcurl\n");
		return EXIT_FAILED;
	}
	code = run(argc, argv);
	curl_global_cleanup();
	return code;
}

/* Presentation helpers that every subcommand shares. */

void time_text(const json_t *t, char buf[TIME_TEXT_MAX])
{
	struct tm tm;
	time_t s;

	if (!json_is_number(t)) {
		snprintf(buf, TIME_TEXT_MAX, "-");
		return;
	}
	s = (time_t)json_number_value(t);
	if (!localtime_r(&s, &tm) || strftime(buf, TIME_TEXT_MAX, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, TIME_TEXT_MAX, "%lld", (long long)s);
}

void span_text(int64_t from, int64_t to, char buf[TIME_TEXT_MAX])
{
	long long d = (long long)(to - from);

	if (d <= 0)
		snprintf(buf, TIME_TEXT_MAX, "now");
	else if (d >= 86400)
		snprintf(buf, TIME_TEXT_MAX, "%lldd %lldh", d / 86400, d % 86400 / 3600);
	else if (d >= 3600)
		snprintf(buf, TIME_TEXT_MAX, "%lldh %lldm", d / 3600, d % 3600 / 60);
	else if (d >= 60)
		snprintf(buf, TIME_TEXT_MAX, "%lldm %llds", d / 60, d % 60);
	else
		snprintf(buf, TIME_TEXT_MAX, "%llds", d);
}

int json_print(const json_t *v)
{
	if (json_dumpf(v, stdout, JSON_INDENT(2)) < 0 || putchar('\n') == EOF)
		return -EIO;
	return 0;
}
