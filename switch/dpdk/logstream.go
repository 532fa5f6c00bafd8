//go:build cgo

package dpdk

/*
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/types.h>
#include <rte_log.h>

extern void vhostdDPDKLog(char *buf, size_t n, int level);

static ssize_t vd_log_write(void *cookie, const char *buf, size_t size)
{
	(void)cookie;
	vhostdDPDKLog((char *)buf, size, rte_log_cur_msg_loglevel());
	return size;
}

// vd_log_open makes DPDK log through vhostdDPDKLog: a stdio stream whose
// writes call into Go with the message's level.
int vd_log_open(void)
{
	cookie_io_functions_t io = { .write = vd_log_write };
	FILE *f = fopencookie(NULL, "w", io);
	if (f == NULL)
		return -1;
	// rte_vlog flushes after every message; a line buffer makes each
	// write hold whole lines.
	setvbuf(f, NULL, _IOLBF, 4096);
	return rte_openlog_stream(f);
}
*/
import "C"

// openLogStream routes DPDK's log into logrus (see log.go). Called before
// rte_eal_init so EAL's own start-up messages go there too.
func openLogStream() error {
	if C.vd_log_open() != 0 {
		return &Error{Op: "open DPDK log stream", Msg: "fopencookie failed"}
	}
	return nil
}
