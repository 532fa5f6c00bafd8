package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhostd/vhostd/daemon/control"
)

// notifyListener is the datagram socket systemd gives a Type=notify
// service in $NOTIFY_SOCKET. addr is a path or an abstract name (@...).
func notifyListener(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readNotify returns the next notification, or "" if none comes within d.
func readNotify(t *testing.T, conn *net.UnixConn, d time.Duration) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// TestSystemdNotify runs vhostd as systemd does a Type=notify service: with
// $NOTIFY_SOCKET set. READY=1 must come only once every vhost-user socket
// and the control socket are there (they are checked the moment it
// arrives), not wait for a client port's frontend, and STOPPING=1 must
// come at SIGTERM. A vhostd that fails to start sends nothing.
func TestSystemdNotify(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vhostd")
	}
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%v", abstract), func(t *testing.T) {
			dir := sockDir(t)
			addr := filepath.Join(dir, "notify") // no .sock: stop checks those are gone
			if abstract {
				addr = fmt.Sprintf("@vhostd-e2e-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
			}
			notify := notifyListener(t, addr)
			socks := []string{filepath.Join(dir, "a.sock"), filepath.Join(dir, "sub", "b.sock")}
			v := &vhostd{t: t, Dir: dir, Control: filepath.Join(dir, "ctl.sock"), done: make(chan error, 1)}
			logf, err := os.Create(filepath.Join(t.TempDir(), "vhostd.log"))
			if err != nil {
				t.Fatal(err)
			}
			v.log = logf
			v.cmd = exec.Command(vhostdBin, "--control", v.Control, "--log-level", "debug",
				"--socket", "a="+socks[0], "--socket", "b="+socks[1],
				// Nobody serves it: vhostd is ready without it.
				"--socket", "c="+filepath.Join(dir, "frontend.sock")+",client",
				"--state-file", filepath.Join(dir, "state.toml"))
			v.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr)
			v.cmd.Stdout, v.cmd.Stderr = logf, logf
			if err := v.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { v.done <- v.cmd.Wait() }()
			t.Cleanup(v.stop)

			msg := readNotify(t, notify, 20*time.Second)
			// Checked at once, before anything else can happen.
			var missing []string
			for _, p := range append(socks, v.Control) {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Type() != os.ModeSocket {
					missing = append(missing, fmt.Sprintf("%s (%v)", p, err))
				}
			}
			if msg == "" {
				t.Fatalf("no notification within 20s\n%s", v.Log())
			}
			if len(missing) > 0 {
				t.Errorf("READY=1 came before these sockets existed: %v", missing)
			}
			lines := strings.Split(msg, "\n")
			if lines[0] != "READY=1" || len(lines) != 2 || !strings.HasPrefix(lines[1], "STATUS=") {
				t.Errorf("first notification %q; want READY=1 and a STATUS= line", msg)
			}
			t.Logf("vhostd sent %q", msg)
			var ports []control.PortInfo
			if err := control.Call(context.Background(), v.Control, "ports", &ports); err != nil || len(ports) != 3 {
				t.Errorf("control socket after READY=1: %d ports, %v", len(ports), err)
			}
			if again := readNotify(t, notify, 300*time.Millisecond); again != "" {
				t.Errorf("a second notification while running: %q", again)
			}

			v.cmd.Process.Signal(syscall.SIGTERM)
			msg = readNotify(t, notify, 10*time.Second)
			if !strings.HasPrefix(msg, "STOPPING=1") {
				t.Errorf("after SIGTERM: %q; want STOPPING=1\n%s", msg, v.Log())
			}
			v.stop() // waits for the exit and checks it was clean
			if msg := readNotify(t, notify, 100*time.Millisecond); msg != "" {
				t.Errorf("after STOPPING=1: %q", msg)
			}
		})
	}

	t.Run("failed start", func(t *testing.T) {
		dir := sockDir(t)
		addr := filepath.Join(dir, "notify")
		notify := notifyListener(t, addr)
		notSock := filepath.Join(dir, "file.sock")
		os.WriteFile(notSock, nil, 0o644)
		cmd := exec.Command(vhostdBin, "--control", filepath.Join(dir, "ctl.sock"), "--socket", "a="+filepath.Join(dir, "a.sock"), "--socket", "b="+notSock)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("vhostd on a socket path that is a file exited 0:\n%s", out)
		}
		if msg := readNotify(t, notify, 100*time.Millisecond); msg != "" {
			t.Errorf("vhostd that failed to start sent %q", msg)
		}
	})
}

// TestSystemdUnit installs vhostd with `make install` into a DESTDIR,
// checks what went where (an existing config is left alone), and runs
// `systemd-analyze verify` on the installed unit with its ExecStart
// pointed at the installed binary. It fails, not skips, without
// systemd-analyze (Debian's systemd package; .ci/deps installs it).
func TestSystemdUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs make install")
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze not found: install it (apt-get install -y systemd; .ci/deps does): %v", err)
	}
	root := moduleRoot(t)
	destdir := t.TempDir()
	const prefix = "/opt/vhostd-test"
	conf := filepath.Join(destdir, "etc/vhostd/vhostd.toml")
	install := func() {
		t.Helper()
		cmd := exec.Command("make", "-s", "install", "DESTDIR="+destdir, "PREFIX="+prefix)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()
	for _, bin := range []string{"vhostd", "vhostctl"} {
		fi, err := os.Stat(filepath.Join(destdir, prefix, "bin", bin))
		if err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("installed %s: %v, mode %v", bin, err, fi)
		}
	}
	example, _ := os.ReadFile(filepath.Join(root, "daemon/systemd/vhostd.toml"))
	if got, err := os.ReadFile(conf + ".example"); err != nil || !bytes.Equal(got, example) {
		t.Errorf("installed vhostd.toml.example: %v, %d bytes; want daemon/systemd/vhostd.toml", err, len(got))
	}
	// A config of the admin's own is never overwritten.
	mine := []byte("# mine\n")
	if err := os.WriteFile(conf, mine, 0o600); err != nil {
		t.Fatal(err)
	}
	install()
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, mine) {
		t.Errorf("make install changed an existing vhostd.toml: %q", got)
	}

	unitPath := filepath.Join(destdir, prefix, "lib/systemd/system/vhostd.service")
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			directives[k] = append(directives[k], v)
		}
	}
	for k, want := range map[string]string{
		"Type":               "notify",
		"ExecStart":          prefix + "/bin/vhostd --config /etc/vhostd/vhostd.toml --state-file /var/lib/vhostd/state.toml",
		"RuntimeDirectory":   "vhostd",
		"StateDirectory":     "vhostd",
		"Restart":            "on-failure",
		"ProtectSystem":      "full",
		"LimitMEMLOCK":       "infinity",
		"NoNewPrivileges":    "yes",
		"RestrictNamespaces": "yes",
	} {
		if got := strings.Join(directives[k], " | "); got != want {
			t.Errorf("unit: %s=%s; want %s", k, got, want)
		}
	}
	for _, af := range []string{"AF_UNIX", "AF_NETLINK", "AF_PACKET"} {
		if !strings.Contains(" "+strings.Join(directives["RestrictAddressFamilies"], " ")+" ", " "+af+" ") {
			t.Errorf("unit: RestrictAddressFamilies=%v lacks %s", directives["RestrictAddressFamilies"], af)
		}
	}
	// These would hide /dev/vfio, /dev/hugepages and /dev/net/tun.
	for _, k := range []string{"PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"} {
		if v, ok := directives[k]; ok {
			t.Errorf("unit sets %s=%v: DPDK's devices would be out of reach", k, v)
		}
	}

	// systemd-analyze verify wants ExecStart's binary to exist: point it
	// at the installed one.
	vdir := t.TempDir()
	verify := func(text string) (lines []string, err error) {
		t.Helper()
		p := filepath.Join(vdir, "vhostd.service")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", p).CombinedOutput()
		t.Logf("systemd-analyze verify (%v):\n%s", err, out)
		for _, l := range strings.Split(string(out), "\n") {
			// Lines about the environment (a container without
			// systemd as PID 1) do not name the unit; any about
			// its own directives or command do.
			if strings.Contains(l, "vhostd.service") {
				lines = append(lines, l)
			}
		}
		return lines, err
	}
	local := strings.Replace(string(unit), "ExecStart="+prefix+"/bin/vhostd ", "ExecStart="+filepath.Join(destdir, prefix, "bin/vhostd")+" ", 1)
	if bad, err := verify(local); err != nil || len(bad) > 0 {
		t.Errorf("systemd-analyze verify: %v; about the unit:\n%s", err, strings.Join(bad, "\n"))
	}
	// The check sees a broken unit: systemd-analyze exits 0 on unknown
	// keys and bad values, and only says so.
	broken := strings.Replace(local, "[Service]\n", "[Service]\nProtectSytem=full\nRestart=sometimes\n", 1)
	if bad, _ := verify(broken); len(bad) < 2 {
		t.Errorf("a unit with an unknown key and a bad value passed the check: %q", bad)
	}
}
