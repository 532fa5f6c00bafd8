package libvirt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// readyMarker is what the test guest prints on its console once booted
// (test/guest/build.sh).
const readyMarker = "VHOSTD-GUEST-READY"

// console drives the test guest's serial console, which libvirt gives a
// unix socket (<serial type='unix'><source mode='bind'>): the line
// protocol of qemu/README.md ("Console protocol"), spoken over that socket
// instead of QEMU's stdio.
type console struct {
	conn  net.Conn
	nonce string

	runMu sync.Mutex // one command at a time
	seq   int        // guarded by runMu

	mu      sync.Mutex
	out     []byte        // everything the guest printed; guarded by mu
	changed chan struct{} // closed when out grows or the reader ends; guarded by mu
	done    chan struct{} // closed when the reader ends
}

// dialConsole connects to a console socket.
func dialConsole(path string) (*console, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	var n [4]byte
	rand.Read(n[:])
	c := &console{conn: conn, nonce: hex.EncodeToString(n[:]), changed: make(chan struct{}), done: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *console) read() {
	buf := make([]byte, 4096)
	for {
		n, err := c.conn.Read(buf)
		c.mu.Lock()
		c.out = append(c.out, buf[:n]...)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			close(c.done)
			return
		}
	}
}

// Close closes the connection (the guest keeps running).
func (c *console) Close() { c.conn.Close() }

// Output returns everything the guest has printed so far.
func (c *console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.out)
}

func (c *console) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

var errConsoleClosed = errors.New("console closed (QEMU exited?)")

// waitLine calls match on each complete line printed from offset from on
// (without its line ending) until it returns true.
func (c *console) waitLine(ctx context.Context, from int, match func(line string) bool) error {
	for {
		c.mu.Lock()
		data := c.out[from:]
		changed := c.changed
		c.mu.Unlock()
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line := strings.TrimRight(string(data[:i]), "\r")
			data, from = data[i+1:], from+i+1
			if match(line) {
				return nil
			}
		}
		select {
		case <-changed:
		case <-c.done:
			// Read what the reader appended last, then give up.
			select {
			case <-changed:
				continue
			default:
			}
			return errConsoleClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitReady waits for the ready marker printed after offset from.
func (c *console) WaitReady(ctx context.Context, from int) error {
	return c.waitLine(ctx, from, func(l string) bool { return strings.Contains(l, readyMarker) })
}

// Run runs cmd with sh in the guest and returns its output and exit status.
func (c *console) Run(ctx context.Context, cmd string) (string, int, error) {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.seq++
	id := c.nonce + "-" + strconv.Itoa(c.seq)
	from := c.len()
	enc := base64.StdEncoding.EncodeToString([]byte(cmd + "\n"))
	var b bytes.Buffer
	for len(enc) > 0 {
		n := min(512, len(enc))
		b.WriteString("VXD " + enc[:n] + "\n")
		enc = enc[n:]
	}
	b.WriteString("VXR " + id + "\n")
	d, _ := ctx.Deadline() // zero: none
	c.conn.SetWriteDeadline(d)
	if _, err := c.conn.Write(b.Bytes()); err != nil {
		return "", -1, fmt.Errorf("run %q: %w", cmd, err)
	}
	var (
		started    bool
		b64        strings.Builder
		code, size = -1, -1
		perr       error
	)
	begin, end := "VXB:"+id, "VXE:"+id+":"
	err := c.waitLine(ctx, from, func(line string) bool {
		if !started {
			started = strings.HasSuffix(line, begin)
			return false
		}
		if i := strings.Index(line, end); i >= 0 {
			f := strings.Split(line[i+len(end):], ":")
			if len(f) != 2 {
				perr = fmt.Errorf("bad end marker %q", line)
				return true
			}
			if code, perr = strconv.Atoi(f[0]); perr == nil {
				size, perr = strconv.Atoi(f[1])
			}
			return true
		}
		if isBase64(line) {
			b64.WriteString(line)
		}
		return false // a stray kernel message
	})
	if err != nil {
		if ctx.Err() != nil {
			// ^C: interrupt the command, the guest's loop survives.
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.conn.Write([]byte{3})
		}
		return "", -1, fmt.Errorf("run %q: %w", cmd, err)
	}
	if perr != nil {
		return "", -1, fmt.Errorf("run %q: garbled reply: %w", cmd, perr)
	}
	out, derr := base64.StdEncoding.DecodeString(b64.String())
	if derr != nil || len(out) != size {
		return "", -1, fmt.Errorf("run %q: garbled reply: %d of %d bytes (%v)", cmd, len(out), size, derr)
	}
	return string(out), code, nil
}

func isBase64(s string) bool {
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=') {
			return false
		}
	}
	return s != ""
}
