//go:build dpdkref && linux

package qemu

// A harness check, not part of the normal suite: two guests on DPDK's own
// vhost-user backend (dpdk-testpmd, net_vhost, io forwarding) ping each
// other. It proves the launcher and the guest image against a reference
// backend, independently of vhostd. Run with:
//
//	go test -tags dpdkref -run TestDPDKBackend -v ./qemu/

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/test/guestimage"
)

func TestDPDKBackend(t *testing.T) {
	requireQEMU(t)
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		t.Fatalf("dpdk-testpmd is required (apt-get install -y dpdk): %v", err)
	}
	kernel, initrd := guestimage.ForTest(t)
	dir := t.TempDir()
	sockA, sockB := filepath.Join(dir, "A.sock"), filepath.Join(dir, "B.sock")

	// Non-interactive testpmd exits at EOF on stdin: keep a pipe open.
	tp := exec.Command("dpdk-testpmd", "-l", "0,1", "--main-lcore", "0",
		"--no-huge", "-m", "1024", "--no-pci", "--no-shconf",
		fmt.Sprintf("--file-prefix=vhostd-qemu-%d", os.Getpid()),
		"--vdev", "net_vhost0,iface="+sockA, "--vdev", "net_vhost1,iface="+sockB,
		"--", "--no-mlockall", "--forward-mode=io", "--total-num-mbufs=16384", "-a")
	stdin, err := tp.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var tpOut lockedBuffer
	tp.Stdout, tp.Stderr = &tpOut, &tpOut
	tp.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := tp.Start(); err != nil {
		t.Fatal(err)
	}
	tpDone := make(chan error, 1)
	go func() { tpDone <- tp.Wait() }()
	stopTestpmd := func() error {
		select {
		case err := <-tpDone:
			return fmt.Errorf("testpmd exited early: %v", err)
		default:
		}
		tp.Process.Signal(syscall.SIGTERM)
		select {
		case <-tpDone:
		case <-time.After(10 * time.Second):
			tp.Process.Kill()
			<-tpDone
		}
		stdin.Close()
		return nil
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopTestpmd()
		}
		if t.Failed() {
			t.Logf("testpmd output:\n%s", tail(tpOut.String(), 4096))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range []string{sockA, sockB} {
		for {
			if _, err := os.Stat(s); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("testpmd did not create %s:\n%s", s, tpOut.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Boot both guests at once.
	cfgs := []GuestConfig{
		{Kernel: kernel, Initrd: initrd, Append: "guestip=10.9.0.1/24",
			NICs: []NIC{{SocketPath: sockA, MAC: "52:54:00:00:00:01"}}},
		{Kernel: kernel, Initrd: initrd, Append: "guestip=10.9.0.2/24",
			NICs: []NIC{{SocketPath: sockB, MAC: "52:54:00:00:00:02"}}},
	}
	guests := make([]*Guest, len(cfgs))
	boot := make([]time.Duration, len(cfgs))
	errs := make([]error, len(cfgs))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			begin := time.Now()
			guests[i], errs[i] = Start(ctx, cfgs[i])
			boot[i] = time.Since(begin)
		}()
	}
	wg.Wait()
	for i, g := range guests {
		if g != nil {
			t.Cleanup(func() { g.Kill() })
		}
		if errs[i] != nil {
			t.Fatalf("guest %d: %v", i+1, errs[i])
		}
	}
	t.Logf("boot (two guests in parallel, testpmd polling one core): %.1f s, %.1f s",
		boot[0].Seconds(), boot[1].Seconds())

	rtt := regexp.MustCompile(`(\d+) packets received.*\n.*= ([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)
	for _, p := range []struct {
		from int
		to   string
	}{{0, "10.9.0.2"}, {1, "10.9.0.1"}} {
		begin := time.Now()
		out, code, err := guests[p.from].Run(ctx, "ping -c 3 "+p.to)
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("guest %d: ping -c 3 %s: exit %d\n%s\nguest eth0: %s", p.from+1, p.to, code, out,
				must(guests[p.from].Run(ctx, "ip addr show eth0; ip neigh")))
		}
		m := rtt.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("cannot parse ping output:\n%s", out)
		}
		t.Logf("guest %d -> %s: %s/3 received, rtt min/avg/max %s/%s/%s ms (%.1f s)",
			p.from+1, p.to, m[1], m[2], m[3], m[4], time.Since(begin).Seconds())
	}

	for i, g := range guests {
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("guest %d: %v", i+1, err)
		}
	}
	stopped = true
	if err := stopTestpmd(); err != nil {
		t.Error(err)
	}
	if err := syscall.Kill(tp.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("testpmd (pid %d) still exists", tp.Process.Pid)
	}
	if !bytes.Contains([]byte(tpOut.String()), []byte("RX-packets")) {
		t.Logf("testpmd output:\n%s", tail(tpOut.String(), 2048))
	}
}

func must(out string, code int, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s(exit %d)", out, code)
}
