package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen binds a unixgram socket as systemd does for NOTIFY_SOCKET; name
// is a path or an abstract name starting with '@'.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestReadyAndStopping(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr string
	}{
		{"path", filepath.Join(t.TempDir(), "notify.sock")},
		{"abstract", fmt.Sprintf("@vhostd-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := listen(t, tc.addr)
			t.Setenv(Env, tc.addr)
			sent, err := Ready("serving 2 ports")
			if err != nil || !sent {
				t.Fatalf("Ready = %v, %v", sent, err)
			}
			if got, want := recv(t, conn), "READY=1\nSTATUS=serving 2 ports"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			sent, err = Stopping("")
			if err != nil || !sent {
				t.Fatalf("Stopping = %v, %v", sent, err)
			}
			if got, want := recv(t, conn), "STOPPING=1"; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// The abstract name must be the one given, '@' turned into a NUL: a
// socket bound to the name spelt with a leading NUL receives it.
func TestAbstractNUL(t *testing.T) {
	name := fmt.Sprintf("vhostd-sdnotify-nul-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn := listen(t, "\x00"+name)
	t.Setenv(Env, "@"+name)
	if _, err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, conn); got != "READY=1" {
		t.Errorf("got %q", got)
	}
}

func TestStatusOneLine(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "n.sock"))
	t.Setenv(Env, conn.LocalAddr().String())
	if _, err := Ready("a\nMAINPID=1"); err != nil {
		t.Fatal(err)
	}
	got := recv(t, conn)
	if strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "STATUS=a MAINPID=1") {
		t.Errorf("a newline in the status made another assignment: %q", got)
	}
}

func TestUnset(t *testing.T) {
	t.Setenv(Env, "")
	if sent, err := Ready("x"); sent || err != nil {
		t.Errorf("Ready without %s = %v, %v; want false, nil", Env, sent, err)
	}
	os.Unsetenv(Env)
	if sent, err := Stopping("x"); sent || err != nil {
		t.Errorf("Stopping without %s = %v, %v; want false, nil", Env, sent, err)
	}
}

func TestErrors(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "nobody-listens.sock"),
		"vsock:2:1234",
		"relative.sock",
	} {
		t.Setenv(Env, addr)
		if sent, err := Ready(""); !sent || err == nil {
			t.Errorf("%s=%q: Ready = %v, %v; want true and an error", Env, addr, sent, err)
		}
	}
}
