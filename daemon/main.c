/* tokensignd: arguments -> run(): configuration, token, keys, sockets, then wait for a signal. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "activation.h"
#include "admin_api.h"
#include "budget.h"
#include "confine.h"
#include "daemon.h"
#include "health.h"
#include "http_linger.h"
#include "json_arena.h"
#include "jwks_http.h"
#include "metrics_http.h"
#include "tls.h"
#include "log.h"
#include "pinfile.h"
#include "log_limit.h"
#include "ratelimit.h"
#include "reload.h"
#include "runtime.h"
#include "scheduler.h"
#include "sign_api.h"

#define DEFAULT_CONFIG "/etc/tokensign/tokensignd.conf"
/* The exit status when the token refused the PIN (tokensignd(8), EXIT STATUS): the unit lists
 * it in RestartPreventExitStatus=, because a restart would try the refused PIN again and a
 * token locks its PIN after a few wrong tries. EX_NOPERM, "NOPERM" to systemd (systemd-analyze
 * exit-status 77). */
#define EXIT_PIN_REFUSED EX_NOPERM
/* Seconds a --touch-token child may take before SIGALRM ends it (a hung token). */
#define TOUCH_TIMEOUT 20

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "Usage: tokensignd [-c FILE] [--check-config]\n"
	    "\n"
	    "Signs JWTs with keys that never leave a PKCS#11 token, and publishes each issuer's\n"
	    "JWKS. Runs in the foreground (systemd Type=notify); stop it with SIGTERM.\n"
	    "\n"
	    "  -c, --config FILE   configuration file (default: " DEFAULT_CONFIG ")\n"
	    "      --check-config  validate the configuration, print every problem, exit 0 or 1\n"
	    "  -h, --help          show this help\n"
	    "      --version       show the version\n"
	    "\n"
	    "Signing API: POST /v1/issuers/NAME/sign on the [sign] socket (see docs/api.md).\n"
	    "JWKS: GET /NAME/.well-known/jwks.json on each [jwks] listen address; discovery at\n"
	    "{iss path}/.well-known/openid-configuration and\n"
	    "/.well-known/oauth-authorization-server{iss path} (see docs/relying-parties.md).\n");
}

static int config_check(const char *path, struct conf **ret)
{
	struct conf_errors errs = {0};
	int r = conf_load(path, ret, &errs);

	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	conf_errors_clear(&errs);
	/* h14-tls: the certificate and key files too, as a start would read them. */
	if (r == 0 && tls_check(*ret, path) < 0) {
		conf_free(*ret);
		*ret = NULL;
		r = -EINVAL;
	}
	return r;
}

/* Public-key halves made by releases before 0.2 are public objects; ours are private now
 * (docs/design.md, "Custody"). Done once, after login and before any key is read. */
/* Only the keeper holds the PIN file from here on. A systemd credential is in a directory of its
 * own, so this process can be denied reading it again, by its path, at no cost to anything else
 * it reads (docs/confinement.md, "The PIN file"): before any thread starts, so that all of them
 * are bound. A PIN file elsewhere shares its directories with files this process may need to
 * read later, and is left readable. */
static int pin_hide(const char *pin_file)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	size_t n = creds ? strlen(creds) : 0;
	char why[256];
	int r;

	if (!n || strncmp(pin_file, creds, n) != 0 || pin_file[n] != '/') {
		log_info("the PIN file is not a systemd credential: this process stays able to "
		         "open it by its path (docs/confinement.md, \"The PIN file\")");
		return 0;
	}
	r = pinfile_hide(pin_file, why, sizeof(why));
	if (r < 0) {
		log_error("cannot hide the PIN file from this process: %s", why);
		return r;
	}
	if (r == 0)
		log_notice("the PIN file stays readable by this process: %s", why);
	else
		log_info("the PIN file is hidden from this process (Landlock)");
	return 0;
}

static int keys_migrate(struct hsmc *hsm)
{
	size_t n = 0;
	int r = hsmc_migrate_public_halves(hsm, &n);

	if (r < 0)
		log_error("cannot make the public-key halves of our keys private objects: %s",
		          hsm_last_error());
	else if (n > 0)
		log_notice("made %zu public-key half(s) of our keys private objects (visible only "
		           "after login)",
		           n);
	return r;
}

/* The main loop: signals; under a systemd watchdog a heartbeat that is only sent while the
 * token answers, so that a hung HSM gets the service restarted; and at each tick the counts of
 * rate-limited log lines, so the end of a flood is reported without waiting for its next line. */
static int main_loop(struct daemon *d)
{
	uint64_t watchdog_usec = 0;
	bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
	struct timespec tick = {.tv_sec = RATELIMIT_REPORT_S};
	sigset_t set;
	int sig;

	if (watchdog)
		tick = (struct timespec){.tv_sec = (time_t)(watchdog_usec / 2000000),
		                         .tv_nsec = (long)(watchdog_usec / 2 % 1000000) * 1000};
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		sig = sigtimedwait(&set, NULL, &tick);
		if (sig < 0 && errno == EAGAIN) {
			log_limit_flush();
			if (watchdog)
				health_watchdog_beat(d);
			continue;
		}
		if (sig < 0)
			continue; /* EINTR */
		if (sig == SIGHUP) {
			sd_notify(0, "RELOADING=1\nSTATUS=Reloading the configuration");
			daemon_reload(d);
			health_notify_status(d, "READY=1\n");
			continue;
		}
		log_notice("signal %d: shutting down", sig);
		sd_notify(0, "STOPPING=1");
		return 0;
	}
}

/* hsmc_on_pin_refused(): the token refused the PIN when the daemon had to log in again. Nothing
 * can be signed until an operator fixes the PIN, and a watchdog restart would try the refused
 * PIN again: shut down, with EXIT_PIN_REFUSED (run()). */
static void pin_refused(void *data)
{
	(void)data;
	log_error("the token refused the PIN (%s); shutting down with exit status %d, which "
	          "systemd does not restart: fix the PIN, then start the service again",
	          hsm_last_error(), EXIT_PIN_REFUSED);
	kill(getpid(), SIGTERM);
}

/* The exit status of run() once it has stopped everything but the token. */
static int exit_status(struct daemon *d, int r)
{
	if (r == -EKEYREJECTED || (d->hsm && hsmc_pin_refused(d->hsm)))
		return EXIT_PIN_REFUSED;
	return r < 0 ? 1 : 0;
}

static void block_signals(void)
{
	sigset_t set;

	/* Blocked before any thread starts, so only sigwait() sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* The connection caps, before anything opens many descriptors: raising the soft limit first. */
static int plan_budget(struct daemon *d, const struct conf *conf)
{
	unsigned long nofile = budget_nofile();
	struct budget want = {conf->sign.max_connections, conf->admin.max_connections,
	                      conf->jwks.max_connections, conf->jwks.max_per_address};
	size_t n_jwks = d->act.n_jwks > 0 ? d->act.n_jwks : conf->jwks.n_listen;
	int r = budget_plan(nofile, 3 * HTTP_LINGER_SLOTS, n_jwks, &want, &d->budget);

	if (r < 0) {
		log_error(
		    "RLIMIT_NOFILE is %lu: too low for the configured max-connections, or for "
		    "any connection at all (%d descriptors are kept for the token and the "
		    "daemon); raise LimitNOFILE= or lower max-connections",
		    nofile, BUDGET_RESERVE + 3 * HTTP_LINGER_SLOTS);
		return r;
	}
	log_notice("descriptors: %lu; connections at most: sign %u, admin %u, jwks %u per "
	           "listener (%u per address)",
	           nofile, d->budget.sign, d->budget.admin, d->budget.jwks,
	           d->budget.jwks_per_address);
	return 0;
}

static int run(const char *config_path)
{
	struct daemon d = {.config_path = config_path, .started_at = (int64_t)time(NULL)};
	struct conf *conf = NULL;
	int r;

	/* SoftHSM keeps key material in our address space: a core file would leak it. */
	prctl(PR_SET_DUMPABLE, 0);
	block_signals();
	/* h15-cost: before any thread uses jansson (json_arena.h). */
	json_arena_install();
	pthread_mutex_init(&d.rt_lock, NULL);
	if (daemon_config_load(config_path, &conf) < 0 || activation_collect(&d.act) < 0 ||
	    plan_budget(&d, conf) < 0) {
		conf_free(conf);
		return 1;
	}
	sd_notify(0, "STATUS=Logging in to the token");
	r = hsmc_open(&(struct hsmc_opts){.module = conf->hsm.module,
	                                  .token = conf->hsm.token,
	                                  .pin_file = conf->hsm.pin_file,
	                                  .session_copies = conf->hsm.session_copies,
	                                  .module_network = conf->hsm.module_network,
	                                  .pin_cpus = conf->hsm.pin_cpus,
	                                  .n_sign = sign_api_workers(),
	                                  .sign_timeout_s = (unsigned)conf->sign.request_timeout},
	              &d.hsm);
	if (r == -EKEYREJECTED) {
		log_error("the token refused the PIN (%s); exiting with status %d, which systemd "
		          "does not restart: fix the PIN, then start the service again",
		          hsm_last_error(), EXIT_PIN_REFUSED);
		conf_free(conf);
		goto out;
	}
	if (r < 0) {
		log_error("cannot use the token: %s", hsm_last_error());
		conf_free(conf);
		goto out;
	}
	hsmc_on_pin_refused(d.hsm, pin_refused, NULL);
	if ((r = keys_migrate(d.hsm)) < 0 || (r = pin_hide(conf->hsm.pin_file)) < 0) {
		conf_free(conf);
		goto out;
	}
	if ((r = runtime_new(d.hsm, conf, &d.rt)) < 0 ||
	    (r = scheduler_start(d.rt->keyring, scheduler_rescan_interval(d.rt->conf),
	                         &d.scheduler)) < 0)
		goto out;
	sd_notify(0, "STATUS=Opening sockets");
	if ((r = sign_api_start(&d, d.act.sign, &d.sign)) < 0 ||
	    (r = jwks_http_start(&d, d.act.jwks, d.act.n_jwks, &d.jwks)) < 0 ||
	    (r = admin_api_start(&d, d.act.admin, &d.admin)) < 0 ||
	    (r = metrics_http_start(&d, &d.metrics)) < 0)
		goto out;
	/* Start-up is over: from here on this process runs nothing and traces nothing
	 * (docs/confinement.md). */
	{
		char why[160];
		if ((r = confine_front(why, sizeof(why))) < 0) {
			log_error("cannot confine the daemon: %s", why);
			goto out;
		}
	}
	log_notice("ready: %zu issuer(s)", d.rt->conf->n_issuers);
	health_notify_status(&d, "READY=1\n");
	r = main_loop(&d);
out:
	metrics_http_stop(d.metrics);
	admin_api_stop(d.admin);
	jwks_http_stop(d.jwks);
	sign_api_stop(d.sign);
	scheduler_stop(d.scheduler);
	runtime_release(d.rt);
	r = exit_status(&d, r);
	hsmc_close(d.hsm);
	pthread_mutex_destroy(&d.rt_lock);
	return r;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {0},
	};
	const char *config = DEFAULT_CONFIG;
	bool check = false;
	int c;

	while ((c = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tokensignd %s\n", TOKENSIGN_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tokensignd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (check) {
		struct conf *conf = NULL;
		if (config_check(config, &conf) < 0)
			return 1;
		printf("%s: OK, %zu issuer(s)\n", config, conf->n_issuers);
		conf_free(conf);
		return 0;
	}
	return run(config);
}
