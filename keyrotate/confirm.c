/* Asking the operator on the terminal before a step that relying parties may feel. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "keyrotate.h"

int confirm(const struct opts *o)
{
	char line[16];

	if (o->yes)
		return 0;
	/* A script that forgot --yes must not hang on a prompt nobody reads, nor guess. */
	if (!isatty(STDIN_FILENO)) {
		fprintf(stderr, "keyrotate: refused: no terminal to confirm on, and no --yes; "
		                "nothing changed\n");
		return -ECANCELED;
	}
	fprintf(stderr, "Proceed? [y/N] ");
	fflush(stderr);
	if (!fgets(line, sizeof(line), stdin)) {
		fputc('\n', stderr);
		line[0] = '\0';
	}
	line[strcspn(line, "\r\n")] = '\0';
	if (strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0)
		return 0;
	fprintf(stderr, "keyrotate: not confirmed; nothing changed\n");
	return -ECANCELED;
}
