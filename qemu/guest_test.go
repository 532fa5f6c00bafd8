//go:build linux

package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/test/guestimage"
)

func TestArgs(t *testing.T) {
	cfg := GuestConfig{
		Kernel:    "/k/vmlinuz",
		Initrd:    "/k/initrd.gz",
		Append:    "guestip=10.9.0.1/24",
		QMPSocket: "/run/q,1.sock",
		NoReboot:  true,
		NICs: []NIC{
			{SocketPath: "/run/A.sock", MAC: "52:54:00:00:00:01"},
			{SocketPath: "/run/B.sock", MAC: "52:54:00:00:00:02", ID: "net1", Reconnect: 1},
			{SocketPath: "/run/C.sock", Server: true},
			{SocketPath: "/run/D.sock", MAC: "52:54:00:00:00:04", HostMTU: 1400, DeviceExtra: "guest_announce=off"},
			{SocketPath: "/run/E.sock", Queues: 2},
		},
		ExtraArgs: []string{"-smp", "1"},
	}
	want := []string{
		"-accel", "tcg", "-nographic", "-display", "none", "-no-user-config", "-nodefaults",
		"-serial", "stdio",
		"-m", "256M",
		"-object", "memory-backend-memfd,id=mem,size=256M,share=on",
		"-numa", "node,memdev=mem",
		"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.gz",
		"-append", "console=ttyS0 quiet panic=-1 guestip=10.9.0.1/24",
		"-no-reboot",
		"-qmp", "unix:/run/q,,1.sock,server=on,wait=off",
		"-chardev", "socket,id=c0,path=/run/A.sock",
		"-netdev", "vhost-user,id=n0,chardev=c0",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01,vectors=0",
		"-chardev", "socket,id=c1,path=/run/B.sock,reconnect=1",
		"-netdev", "vhost-user,id=n1,chardev=c1",
		"-device", "virtio-net-pci,netdev=n1,mac=52:54:00:00:00:02,vectors=0,id=net1",
		"-chardev", "socket,id=c2,path=/run/C.sock,server=on,wait=off",
		"-netdev", "vhost-user,id=n2,chardev=c2",
		"-device", "virtio-net-pci,netdev=n2,vectors=0",
		"-chardev", "socket,id=c3,path=/run/D.sock",
		"-netdev", "vhost-user,id=n3,chardev=c3",
		"-device", "virtio-net-pci,netdev=n3,mac=52:54:00:00:00:04,vectors=0,host_mtu=1400,guest_announce=off",
		"-chardev", "socket,id=c4,path=/run/E.sock",
		"-netdev", "vhost-user,id=n4,chardev=c4,queues=2",
		"-device", "virtio-net-pci,netdev=n4,vectors=0,mq=on",
		"-smp", "1",
	}
	if got := cfg.Args(); !reflect.DeepEqual(got, want) {
		t.Errorf("Args() =\n%q\nwant\n%q", got, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}

	private := GuestConfig{Kernel: "k", MemoryMB: 128, PrivateMemory: true}
	want = []string{
		"-accel", "tcg", "-nographic", "-display", "none", "-no-user-config", "-nodefaults",
		"-serial", "stdio",
		"-m", "128M",
		"-kernel", "k",
		"-append", "console=ttyS0 quiet panic=-1",
	}
	if got := private.Args(); !reflect.DeepEqual(got, want) {
		t.Errorf("Args() with PrivateMemory =\n%q\nwant\n%q", got, want)
	}

	for _, bad := range []GuestConfig{{}, {Kernel: "k", NICs: []NIC{{MAC: "52:54:00:00:00:01"}}}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

// requireQEMU skips in -short mode and fails if QEMU is missing.
func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped with -short")
	}
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s is required for the guest tests (apt-get install -y qemu-system-x86; run with -short to skip): %v", DefaultBinary, err)
	}
}

// startGuest starts a guest and makes sure it is killed at the end of the test.
func startGuest(t *testing.T, cfg GuestConfig) *Guest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin := time.Now()
	g, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ready in %.1f s", time.Since(begin).Seconds())
	t.Cleanup(func() {
		g.Kill()
		if t.Failed() {
			t.Logf("guest console:\n%s", g.Console())
		}
	})
	return g
}

func mustRun(t *testing.T, g *Guest, cmd string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code, err := g.Run(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return out, code
}

func TestGuest(t *testing.T) {
	requireQEMU(t)
	kernel, initrd := guestimage.ForTest(t)
	logPath := filepath.Join(t.TempDir(), "console.log")
	g := startGuest(t, GuestConfig{Kernel: kernel, Initrd: initrd, ConsoleLog: logPath})

	out, code := mustRun(t, g, "echo hello; uname -r")
	lines := strings.Split(out, "\n")
	if code != 0 || len(lines) != 3 || lines[0] != "hello" || !strings.HasSuffix(lines[1], "-cloud-amd64") || lines[2] != "" {
		t.Errorf(`Run("echo hello; uname -r") = %q, %d; want "hello\n<ver>-cloud-amd64\n", 0`, out, code)
	}
	if out, code := mustRun(t, g, "false"); out != "" || code != 1 {
		t.Errorf(`Run("false") = %q, %d; want "", 1`, out, code)
	}
	if out, code := mustRun(t, g, "echo out; echo err >&2; exit 3"); out != "out\nerr\n" || code != 3 {
		t.Errorf("Run(stdout, stderr, exit 3) = %q, %d; want %q, 3", out, code, "out\nerr\n")
	}
	quoted := `printf '%s|' "a'b" 'c"d' '$HOME' "tab	x"; echo`
	if out, _ := mustRun(t, g, quoted); out != "a'b|c\"d|$HOME|tab\tx|\n" {
		t.Errorf("Run(%q) = %q", quoted, out)
	}
	long := strings.Repeat("x", 10000) // longer than a tty line
	if out, code := mustRun(t, g, "echo "+long+" | wc -c; seq 1 20000 | tail -n 1"); out != "10001\n20000\n" || code != 0 {
		t.Errorf("Run(long command) = %q, %d; want %q, 0", out, code, "10001\n20000\n")
	}
	if out, _ := mustRun(t, g, "seq 1 20000"); len(out) != 108894 || !strings.HasSuffix(out, "\n19999\n20000\n") {
		t.Errorf("Run(seq 1 20000) returned %d bytes, want 108894", len(out))
	}
	if out, _ := mustRun(t, g, "ip -o link show lo; ls /sys/class/net"); !strings.Contains(out, "UP") || strings.Contains(out, "eth0") {
		t.Errorf("network state = %q, want lo up and no eth0", out)
	}

	// A command that outlives its context is interrupted; the guest stays usable.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, code, err := g.Run(ctx, "sleep 60")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
		t.Errorf(`Run("sleep 60") with a 1 s deadline = %d, %v; want -1, DeadlineExceeded`, code, err)
	}
	begin := time.Now()
	if out, code := mustRun(t, g, "echo after"); out != "after\n" || code != 0 {
		t.Errorf("Run after an interrupted command = %q, %d", out, code)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("Run after an interrupted command took %v: interrupt did not work", d)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	begin = time.Now()
	if err := g.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("reboot took %.1f s", time.Since(begin).Seconds())
	if out, code := mustRun(t, g, "echo rebooted"); out != "rebooted\n" || code != 0 {
		t.Errorf("Run after reboot = %q, %d", out, code)
	}

	pid := g.Pid()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("Shutdown returned before QEMU exited")
	}
	if err := g.Wait(); err != nil {
		t.Errorf("Wait() after Shutdown = %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("QEMU pid %d still exists after Shutdown (kill 0: %v)", pid, err)
	}
	if _, _, err := g.Run(ctx, "true"); !errors.Is(err, ErrExited) {
		t.Errorf("Run after Shutdown = %v, want ErrExited", err)
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"+ReadyMarker+"\r\n"); n != 2 {
		t.Errorf("console log has %d ready markers, want 2 (boot and reboot)", n)
	}
}

func TestGuestNoReboot(t *testing.T) {
	requireQEMU(t)
	kernel, initrd := guestimage.ForTest(t)
	g := startGuest(t, GuestConfig{Kernel: kernel, Initrd: initrd, NoReboot: true, MemoryMB: 128, PrivateMemory: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := g.Reboot(ctx); !errors.Is(err, ErrExited) {
		t.Errorf("Reboot with NoReboot = %v, want ErrExited", err)
	}
	if err := g.Wait(); err != nil {
		t.Errorf("Wait() = %v, want nil (QEMU exits cleanly on reboot with -no-reboot)", err)
	}
}

func TestStartErrors(t *testing.T) {
	requireQEMU(t)
	kernel, initrd := guestimage.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := Start(ctx, GuestConfig{Kernel: "/nonexistent/vmlinuz"}); err == nil {
		t.Error("Start with a missing kernel succeeded")
	}
	_, err := Start(ctx, GuestConfig{Kernel: kernel, Initrd: initrd, ExtraArgs: []string{"-no-such-option"}})
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("Start with a bad QEMU option = %v; want ErrExited with QEMU's complaint", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	_, err = Start(short, GuestConfig{Kernel: kernel, Initrd: initrd})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "--- console") {
		t.Errorf("Start with a 200 ms deadline = %v; want DeadlineExceeded with diagnostics", err)
	}
}
