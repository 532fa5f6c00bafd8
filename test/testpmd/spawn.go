package testpmd

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Parent-death signals from Go.
//
// Linux sends a child its parent-death signal (prctl PR_SET_PDEATHSIG,
// SysProcAttr.Pdeathsig) when the THREAD that forked it exits, not when the
// process does. Go threads exit while the program runs: a goroutine that
// calls runtime.LockOSThread and returns without unlocking takes its thread
// with it (the bench's wake-floor probe does exactly that, and DPDK-minded
// code pins threads that way). exec.Cmd.Start forks on whatever thread its
// goroutine happens to run on, so a child started there would get the
// signal at a random moment, long before the program ends
// (TestPdeathsigThreadCaveat shows it). Locking the OS thread just around
// Start is not enough: once unlocked, the thread returns to Go's pool and
// another goroutine may later lock it and exit.
//
// StartProcess therefore forks every child from one goroutine that locks
// its thread for good and never returns: that thread lives exactly as long
// as the process, so the signal comes when, and only when, the process
// ends (SIGKILL included).

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

func spawner() {
	// Never unlocked, and the goroutine never returns: see above.
	runtime.LockOSThread()
	for r := range spawnCh {
		r.done <- r.cmd.Start()
	}
}

// StartProcess starts cmd like cmd.Start, with sig as its parent-death
// signal (SysProcAttr.Pdeathsig; the other SysProcAttr fields are kept),
// from a thread that lives as long as this process: the child gets sig
// when this process ends, however it ends, and not before. The signal
// survives exec of non-setuid programs, so wrappers such as taskset and
// stdbuf pass it on to the program they run.
func StartProcess(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go spawner()
	})
	done := make(chan error, 1)
	spawnCh <- spawnReq{cmd: cmd, done: done}
	return <-done
}
