package vhost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMessageTimeout bounds how long the rest of a message may take to
// arrive once its first byte has, and how long a reply may wait for the
// frontend to make room for it. QEMU writes each message in one sendmsg
// and reads every reply it asks for at once, so two seconds only ever
// expire for a frontend that stalls on purpose or is wedged.
const DefaultMessageTimeout = 2 * time.Second

// conn frames vhost-user messages on a connected unix stream socket,
// receiving fds with SCM_RIGHTS.
type conn struct {
	uc  *net.UnixConn
	oob []byte
	hdr [headerSize]byte
	// msgTimeout bounds the time from a message's first byte to its last;
	// replyTimeout bounds the write of one reply. Between messages there
	// is no deadline: QEMU idles for hours on a healthy connection.
	msgTimeout   time.Duration
	replyTimeout time.Duration
}

func newConn(uc *net.UnixConn) *conn {
	// Room for one fd more than allowed, so an excess is seen and refused
	// rather than silently truncated.
	return &conn{uc: uc, oob: make([]byte, unix.CmsgSpace(4*(maxFDs+1))),
		msgTimeout: DefaultMessageTimeout, replyTimeout: DefaultMessageTimeout}
}

// readMessage reads one request. Any fds received are owned by the
// returned message, or closed when an error is returned. io.EOF means the
// frontend closed the connection between messages.
//
// It waits for a message's first byte as long as it takes, then gives the
// rest of the message msgTimeout: a frontend that sends part of a message
// and stalls would otherwise hold the port (one frontend per socket)
// forever.
func (c *conn) readMessage() (*Message, error) {
	var fds []int
	fail := func(err error) (*Message, error) {
		closeFDs(fds)
		return nil, err
	}
	got := 0
	armed := false
	for got < headerSize {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.hdr[got:], c.oob)
		if n > 0 { // n is -1 on some errors
			got += n
		}
		if oobn > 0 {
			more, perr := parseRights(c.oob[:oobn])
			fds = append(fds, more...)
			if perr != nil {
				return fail(perr)
			}
		}
		if !armed && (got > 0 || len(fds) > 0) {
			armed = true
			if derr := c.uc.SetReadDeadline(time.Now().Add(c.msgTimeout)); derr != nil {
				return fail(fmt.Errorf("set read deadline: %w", derr))
			}
			// Cleared on every way out, so that the wait for the next
			// message has no deadline.
			defer c.uc.SetReadDeadline(time.Time{})
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			if got == 0 && len(fds) == 0 {
				return nil, io.EOF
			}
			return fail(fmt.Errorf("read header: connection closed after %d of %d bytes", got, headerSize))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fail(fmt.Errorf("frontend sent %d of %d header bytes and stalled for %v", got, headerSize, c.msgTimeout))
		}
		if err != nil {
			return fail(fmt.Errorf("read header: %w", err))
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fail(fmt.Errorf("read header: more than %d fds sent, ancillary data truncated", maxFDs))
		}
	}
	h := decodeHeader(c.hdr[:])
	if err := validateHeader(h); err != nil {
		return fail(err)
	}
	if len(fds) > maxFDs {
		return fail(fmt.Errorf("%v: %d fds, at most %d are accepted", h.Request, len(fds), maxFDs))
	}
	m := &Message{Header: h, Payload: make([]byte, h.Size)}
	if n, err := io.ReadFull(c.uc, m.Payload); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fail(fmt.Errorf("%v: frontend sent %d of %d payload bytes and stalled for %v", h.Request, n, h.Size, c.msgTimeout))
		}
		return fail(fmt.Errorf("%v: read %d-byte payload: %w", h.Request, h.Size, err))
	}
	m.FDs = fds
	return m, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse ancillary data: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS: nothing to own
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// reply sends a reply to req carrying payload.
func (c *conn) reply(req Request, payload []byte) error { return c.replyFD(req, payload, -1) }

// replyFD sends a reply to req carrying payload and, if fd >= 0, fd,
// which it closes.
func (c *conn) replyFD(req Request, payload []byte, fd int) error {
	var oob []byte
	if fd >= 0 {
		defer unixClose(fd)
		oob = unix.UnixRights(fd)
	}
	buf := make([]byte, headerSize+len(payload))
	Header{Request: req, Flags: flagVersion | flagReply, Size: uint32(len(payload))}.encode(buf)
	copy(buf[headerSize:], payload)
	// A frontend that sends requests but never reads the replies fills the
	// socket buffer; without a deadline this write, and with it the
	// connection and the port, would block forever.
	if err := c.uc.SetWriteDeadline(time.Now().Add(c.replyTimeout)); err != nil {
		return fmt.Errorf("reply to %v: set write deadline: %w", req, err)
	}
	defer c.uc.SetWriteDeadline(time.Time{})
	if _, _, err := c.uc.WriteMsgUnix(buf, oob, nil); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("reply to %v: frontend has not read its replies for %v", req, c.replyTimeout)
		}
		return fmt.Errorf("reply to %v: %w", req, err)
	}
	return nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unixClose(fd)
	}
}

func unixClose(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

func (c *conn) replyU64(req Request, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return c.reply(req, b[:])
}
