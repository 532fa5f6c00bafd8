package control

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/vhostd/vhostd/daemon/config"
)

// TestSocketAppearsWithItsMode: the control socket appears at its path
// already with mode 0660, moved there whole, never bound there with the
// umask's permissions first (whoever connected in between would have had
// the daemon's control). An inotify watch on the directory tells the two
// apart: a bind at the path is IN_CREATE of its name, a move IN_MOVED_TO.
// Close removes it.
func TestSocketAppearsWithItsMode(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0) // the most open a bind could make it: 0777
	defer unix.Umask(old)
	l := logrus.New()
	l.SetOutput(io.Discard)
	s, err := Listen(ctl, &recorder{cfg: config.Default()}, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	var created, moved bool
	buf := make([]byte, 64*1024)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("read inotify events: %v", err)
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := string(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		if name == "ctl.sock" {
			created = created || ev.Mask&unix.IN_CREATE != 0
			moved = moved || ev.Mask&unix.IN_MOVED_TO != 0
		}
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	if created || !moved {
		t.Errorf("ctl.sock created in place: %v, moved into place: %v; want moved only", created, moved)
	}
	st, err := os.Lstat(ctl)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode %v, want a socket with 0660", st.Mode())
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := os.Lstat(ctl); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
}
