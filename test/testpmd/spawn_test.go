package testpmd

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gone tells whether pid has ended (no such process, or a zombie waiting
// for a reaper).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !gone(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestPdeathsigThreadCaveat shows why StartProcess exists: with a plain
// cmd.Start, the parent-death signal fires when the forking thread exits,
// here a goroutine's locked thread, while this process lives on. Started
// through StartProcess from such a goroutine, the child survives.
func TestPdeathsigThreadCaveat(t *testing.T) {
	// start forks sleep from a goroutine locked to a thread that ends
	// when the goroutine returns. Go never ends the main thread (a
	// locked goroutine exiting there wedges it instead), so a fork that
	// happened there is killed and tried again.
	start := func(viaSpawner bool) *exec.Cmd {
		for try := 0; ; try++ {
			cmd := exec.Command("sleep", "30")
			errc := make(chan error)
			onMain := false
			go func() {
				runtime.LockOSThread()
				onMain = syscall.Gettid() == os.Getpid()
				if viaSpawner {
					errc <- StartProcess(cmd, syscall.SIGKILL)
					return
				}
				cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
				errc <- cmd.Start()
			}()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !onMain || viaSpawner {
				return cmd
			}
			cmd.Process.Kill()
			cmd.Wait()
			if try == 20 {
				t.Fatal("every goroutine ran on the main thread")
			}
		}
	}

	plain := start(false)
	done := make(chan error, 1)
	go func() { done <- plain.Wait() }()
	select {
	case err := <-done:
		if st, ok := plain.ProcessState.Sys().(syscall.WaitStatus); !ok || st.Signal() != syscall.SIGKILL {
			t.Errorf("plain Start: child ended with %v, want SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		plain.Process.Kill()
		<-done
		t.Error("plain Start: the forking thread's exit did not kill the child; if Go now keeps such threads, StartProcess's spawner is no longer needed")
	}

	spawned := start(true)
	time.Sleep(200 * time.Millisecond)
	if gone(spawned.Process.Pid) {
		t.Error("a child started through StartProcess died when the calling goroutine's thread exited")
	}
	spawned.Process.Kill()
	spawned.Wait()
}

// TestPdeathsigOnKill kills (SIGKILL) a helper process that started a
// child through StartProcess, and checks the child dies with it.
func TestPdeathsigOnKill(t *testing.T) {
	if os.Getenv("TESTPMD_SPAWN_HELPER") == "1" {
		spawnHelper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPdeathsigOnKill$")
	cmd.Env = append(os.Environ(), "TESTPMD_SPAWN_HELPER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (%q)", err, line)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "child ")))
	if err != nil || pid <= 0 {
		t.Fatalf("helper said %q", line)
	}
	if gone(pid) {
		t.Fatalf("child %d not running before the kill", pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !waitGone(pid, 5*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("child %d outlived its SIGKILLed parent", pid)
	}
}

// spawnHelper is the helper process of TestPdeathsigOnKill: it starts a
// child from a goroutine whose thread then ends (the caveat), says the
// child's PID, and waits to be killed.
func spawnHelper() {
	cmd := exec.Command("sleep", "30")
	errc := make(chan error)
	go func() {
		runtime.LockOSThread()
		errc <- StartProcess(cmd, syscall.SIGKILL)
	}()
	if err := <-errc; err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("child %d\n", cmd.Process.Pid)
	time.Sleep(30 * time.Second)
	os.Exit(1)
}
