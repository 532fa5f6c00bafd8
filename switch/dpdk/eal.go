//go:build cgo

package dpdk

/*
#cgo pkg-config: libdpdk
#include <stdlib.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

static int vd_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }
static unsigned vd_lcore_id(void) { return rte_lcore_id(); }
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/sirupsen/logrus"
)

// EAL is an initialised DPDK Environment Abstraction Layer and the OS
// thread its control calls run on (see the package documentation).
type EAL struct {
	log   *logrus.Entry
	calls chan func()
	ended chan struct{}

	// runDir is EAL's runtime directory; removeDirs lists what Cleanup
	// removes because EAL created it here (deepest first).
	runDir     string
	removeDirs []string

	mu     sync.Mutex // guards closed against calls being closed
	closed bool
}

var (
	initMu   sync.Mutex
	initDone bool // rte_eal_init ran (or was tried) in this process
)

// Init runs rte_eal_init with args (without argv[0]; see EALArgs) on a new
// OS thread that then serves the EAL's control calls. DPDK's log goes to
// log with field component=dpdk. It can succeed once per process. On
// failure it removes the runtime directory EAL created, and the error says
// what to try.
func Init(args []string, log *logrus.Entry) (*EAL, error) {
	initMu.Lock()
	defer initMu.Unlock()
	if initDone {
		return nil, ErrInitialized
	}
	initDone = true
	setLogger(log)
	e := &EAL{log: log, calls: make(chan func()), ended: make(chan struct{})}
	// Note which runtime directories exist now, to remove only ours later.
	var fresh []string
	if p := FilePrefix(args); p != "" {
		for _, d := range runtimeDirCandidates(p) {
			for ; d != "/" && d != "."; d = filepath.Dir(d) {
				if _, err := os.Stat(d); err == nil {
					break
				}
				fresh = append(fresh, d)
			}
		}
	}
	res := make(chan error, 1)
	go e.thread(args, fresh, res)
	if err := <-res; err != nil {
		<-e.ended
		removeCreated(fresh)
		return nil, err
	}
	return e, nil
}

// thread is the EAL's control thread: rte_eal_init makes it the main lcore
// and pins it to that lcore's CPU. It never unlocks the OS thread, so when
// the goroutine ends (after Cleanup or a failed init) Go ends the thread
// rather than reuse a pinned thread that DPDK thinks is its main lcore.
func (e *EAL) thread(args []string, fresh []string, res chan<- error) {
	runtime.LockOSThread()
	defer close(e.ended)
	if err := openLogStream(); err != nil {
		res <- err
		return
	}
	// EAL keeps pointers into argv (and getopt permutes it): the strings
	// are allocated once per process and never freed.
	argv := make([]*C.char, 0, len(args)+2)
	argv = append(argv, C.CString("vhostd"))
	for _, a := range args {
		argv = append(argv, C.CString(a))
	}
	cargv := (**C.char)(C.calloc(C.size_t(len(argv)+1), C.size_t(unsafe.Sizeof(uintptr(0)))))
	copy(unsafe.Slice(cargv, len(argv)+1), argv)
	mark := complaintMark()
	if rc := C.vd_eal_init(C.int(len(argv)), cargv); rc < 0 {
		errno := rteErrno()
		err := &Error{Op: "DPDK EAL init", Errno: errno, Msg: strerror(errno), Log: complaintsSince(mark)}
		err.Hint = initHint(args, err.Log)
		res <- err
		return
	}
	e.runDir = C.GoString(C.rte_eal_get_runtime_dir())
	if len(fresh) > 0 && fresh[0] == e.runDir {
		e.removeDirs = fresh
	}
	e.log.WithFields(logrus.Fields{"args": strings.Join(args, " "), "runtime_dir": e.runDir, "main_lcore_cpu": FirstCPU()}).Info("DPDK EAL initialised")
	res <- nil
	for f := range e.calls {
		f()
	}
}

// do runs f on the EAL's control thread and returns its error.
func (e *EAL) do(f func() error) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	done := make(chan error, 1)
	e.calls <- func() { done <- f() }
	e.mu.Unlock()
	return <-done
}

// RuntimeDir returns EAL's runtime directory (e.g. /var/run/dpdk/PREFIX).
func (e *EAL) RuntimeDir() string { return e.runDir }

// Cleanup releases EAL's resources (rte_eal_cleanup), ends its control
// thread and removes the runtime directories EAL created. Close every port
// and pool first. DPDK cannot be initialised again in this process.
func (e *EAL) Cleanup() error {
	var err error
	if derr := e.do(func() error {
		if rc := C.rte_eal_cleanup(); rc < 0 {
			err = &Error{Op: "DPDK EAL cleanup", Errno: int(-rc), Msg: strerror(int(rc))}
		}
		return nil
	}); derr != nil {
		return derr
	}
	e.mu.Lock()
	e.closed = true
	close(e.calls)
	e.mu.Unlock()
	<-e.ended
	// EAL leaves its runtime directory behind (and in it, without
	// --no-shconf or --no-telemetry, its config and sockets).
	if rerr := removeCreated(e.removeDirs); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// removeCreated removes the directories this process made for EAL: dirs[0]
// (the runtime directory, deepest) with its contents, then its parents if
// they are empty.
func removeCreated(dirs []string) error {
	for i, d := range dirs {
		var err error
		if i == 0 {
			err = os.RemoveAll(d)
		} else {
			err = os.Remove(d)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			if i == 0 {
				return fmt.Errorf("remove DPDK runtime directory %s: %w", d, err)
			}
			return nil // a parent another process uses now
		}
	}
	return nil
}

// RegisterThread gives the calling OS thread an lcore id (rte_thread_register)
// so that mempool caches work on it; it does nothing on a thread that has
// one. The caller must have locked its goroutine to the thread. When DPDK
// has no lcore id left, the thread stays unregistered and the error says
// so: the data path still works, without the cache.
func RegisterThread() error {
	if C.vd_lcore_id() != C.LCORE_ID_ANY {
		return nil
	}
	if C.rte_thread_register() != 0 {
		errno := rteErrno()
		return &Error{Op: "register thread with DPDK (rte_thread_register)", Errno: errno, Msg: strerror(errno)}
	}
	return nil
}

// LcoreID returns the calling thread's lcore id, or -1 when it has none.
func LcoreID() int {
	id := C.vd_lcore_id()
	if id == C.LCORE_ID_ANY {
		return -1
	}
	return int(id)
}
