package vhost

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// checkEventfd makes sure fd, received from a frontend for a ring's kick,
// call or error signal, is an eventfd, and sets O_NONBLOCK on it. The data
// path blocks in epoll on kick fds and writes call fds once per burst: a
// pipe the frontend never drains, a socket or a FIFO would block a poller
// thread and freeze every port it serves, and a regular file would never
// signal at all.
//
// O_NONBLOCK lives on the open file description, which the frontend
// shares: it can clear the flag again with its own fcntl, and Linux gives
// no private description of an eventfd (open of /proc/self/fd/N fails
// with ENXIO for anonymous inodes; pwritev2's RWF_NOWAIT is refused with
// EOPNOTSUPP on eventfds). Setting the flag here protects against
// frontends that send blocking eventfds by mistake, not against one that
// races us on purpose.
func checkEventfd(fd int) error {
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return fmt.Errorf("fd %d: %w", fd, err)
	}
	if link != "anon_inode:[eventfd]" {
		return fmt.Errorf("fd is %s, not an eventfd", fdKind(fd, link))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("make eventfd non-blocking: %w", err)
	}
	return nil
}

// fdKind names what an fd is, for error messages a person reads: "a
// pipe", "a socket", "a memfd", "a regular file".
func fdKind(fd int, link string) string {
	switch {
	case strings.HasPrefix(link, "pipe:"):
		return "a pipe"
	case strings.HasPrefix(link, "socket:"):
		return "a socket"
	case strings.HasPrefix(link, "anon_inode:"):
		return "an anonymous inode (" + strings.Trim(strings.TrimPrefix(link, "anon_inode:"), "[]") + ")"
	case strings.HasPrefix(link, "/memfd:"):
		return "a memfd"
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "unknown (" + link + ")"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "unknown (" + link + ")"
}

// eventfdCount returns the counter of eventfd fd without reading it (a
// read would reset it, and could block if the frontend cleared
// O_NONBLOCK): Linux shows it, in hex, in /proc/self/fdinfo.
func eventfdCount(fd int) (uint64, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, fmt.Errorf("eventfd %d: %w", fd, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "eventfd-count:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("eventfd %d: count %q: %w", fd, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("eventfd %d: no eventfd-count in its fdinfo", fd)
}

// inputPending reports whether bytes from the peer wait unread on uc (or
// whether that cannot be told).
func inputPending(uc *net.UnixConn) bool {
	rc, err := uc.SyscallConn()
	if err != nil {
		return true
	}
	n, ierr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		return true
	}
	return n > 0
}
