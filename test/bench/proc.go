package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vhostd/vhostd/test/testpmd"
)

// Proc is a child process the bench started and must stop: a backend
// (vhostd, ovsdb-server, ovs-vswitchd). dpdk-testpmd instances are run by
// the testpmd package, which stops them itself.
type Proc struct {
	// Name labels the process in messages.
	Name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// StartProc runs argv with its output appended to logPath, in a process
// group of its own (a Ctrl-C at the terminal reaches only the bench, which
// then stops its children in order) and with SIGTERM as parent-death
// signal (a bench killed with SIGKILL does not leave a backend spinning).
// env, when not nil, is added to the environment. The PID is recorded in
// tr so the final check can confirm the process is gone.
func StartProc(tr *Tracker, name, logPath string, env []string, argv ...string) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", name, err)
	}
	fmt.Fprintf(logf, "### %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// From the testpmd package's spawner thread: Linux sends the
	// parent-death signal when the forking thread ends, and this program
	// ends threads (WakeFloor's locked goroutine).
	if err := testpmd.StartProcess(cmd, syscall.SIGTERM); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	p := &Proc{Name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	tr.AddPID(name, cmd.Process.Pid)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id (taskset execs the program in place, so
// it is the program's own).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended (and was reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process (by PID, never by name), waits up to
// grace for it to exit, then sends SIGKILL. It returns an error if the
// process had to be killed or exited with a failure before being asked to
// stop.
func (p *Proc) Stop(grace time.Duration) error {
	defer p.log.Close()
	if p.Exited() {
		if p.err != nil {
			return fmt.Errorf("%s had exited: %w", p.Name, p.err)
		}
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not exit within %v of SIGTERM: killed", p.Name, grace)
}

// ExitErr returns how the process ended (nil while it runs).
func (p *Proc) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return p.err
}
