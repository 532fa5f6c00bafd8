// Package sdnotify implements the sender side of systemd's service
// notification protocol (sd_notify(3)) with the standard library: a
// service started with Type=notify finds the path of a datagram socket in
// $NOTIFY_SOCKET and sends newline-separated VAR=VALUE assignments to it,
// READY=1 once it serves, STOPPING=1 when it begins to shut down.
//
// Without $NOTIFY_SOCKET (not run by systemd, or not Type=notify) every
// function does nothing.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Env is the environment variable systemd passes the socket in.
const Env = "NOTIFY_SOCKET"

// Notify sends state, newline-separated VAR=VALUE assignments such as
// "READY=1\nSTATUS=serving", to the socket named by $NOTIFY_SOCKET. It
// returns false, nil when the variable is unset or empty. A name starting
// with '@' is an abstract socket (its '@' stands for a NUL byte).
func Notify(state string) (sent bool, err error) {
	path := os.Getenv(Env)
	if path == "" {
		return false, nil
	}
	return true, send(path, state)
}

func send(path, state string) error {
	switch {
	case strings.HasPrefix(path, "@"):
		path = "\x00" + path[1:]
	case strings.HasPrefix(path, "/"):
	default:
		// systemd also passes vsock addresses (vsock:CID:PORT) to
		// services in VMs; vhostd runs on the host.
		return fmt.Errorf("%s=%q: only unix socket paths (/...) and abstract names (@...) are supported", Env, path)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	n, err := conn.Write([]byte(state))
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	if n != len(state) {
		return errors.New("sd_notify: short write")
	}
	return nil
}

// Ready tells systemd the service is up (READY=1), with status as its
// one-line STATUS= text (systemctl status shows it) unless status is
// empty.
func Ready(status string) (bool, error) {
	return Notify(withStatus("READY=1", status))
}

// Stopping tells systemd the service is shutting down (STOPPING=1).
func Stopping(status string) (bool, error) {
	return Notify(withStatus("STOPPING=1", status))
}

func withStatus(state, status string) string {
	if status == "" {
		return state
	}
	// One line: a newline would start another assignment.
	return state + "\nSTATUS=" + strings.ReplaceAll(status, "\n", " ")
}
