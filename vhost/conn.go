package vhost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// conn frames vhost-user messages on a connected unix stream socket,
// receiving fds with SCM_RIGHTS.
type conn struct {
	uc  *net.UnixConn
	oob []byte
	hdr [headerSize]byte
}

func newConn(uc *net.UnixConn) *conn {
	// Room for one fd more than allowed, so an excess is seen and refused
	// rather than silently truncated.
	return &conn{uc: uc, oob: make([]byte, unix.CmsgSpace(4*(maxFDs+1)))}
}

// readMessage reads one request. Any fds received are owned by the
// returned message, or closed when an error is returned. io.EOF means the
// frontend closed the connection between messages.
func (c *conn) readMessage() (*Message, error) {
	var fds []int
	fail := func(err error) (*Message, error) {
		closeFDs(fds)
		return nil, err
	}
	got := 0
	for got < headerSize {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.hdr[got:], c.oob)
		if oobn > 0 {
			more, perr := parseRights(c.oob[:oobn])
			fds = append(fds, more...)
			if perr != nil {
				return fail(perr)
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			if got == 0 && len(fds) == 0 {
				return nil, io.EOF
			}
			return fail(fmt.Errorf("read header: connection closed after %d of %d bytes", got, headerSize))
		}
		if err != nil {
			return fail(fmt.Errorf("read header: %w", err))
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fail(fmt.Errorf("read header: more than %d fds sent, ancillary data truncated", maxFDs))
		}
		got += n
	}
	h := decodeHeader(c.hdr[:])
	if err := validateHeader(h); err != nil {
		return fail(err)
	}
	if len(fds) > maxFDs {
		return fail(fmt.Errorf("%v: %d fds, at most %d are accepted", h.Request, len(fds), maxFDs))
	}
	m := &Message{Header: h, Payload: make([]byte, h.Size)}
	if _, err := io.ReadFull(c.uc, m.Payload); err != nil {
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
func (c *conn) reply(req Request, payload []byte) error {
	buf := make([]byte, headerSize+len(payload))
	Header{Request: req, Flags: flagVersion | flagReply, Size: uint32(len(payload))}.encode(buf)
	copy(buf[headerSize:], payload)
	if _, err := c.uc.Write(buf); err != nil {
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
