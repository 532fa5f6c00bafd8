package vhost

import (
	"encoding/binary"
	"fmt"

	"github.com/vhostd/vhostd/virtqueue/guestmem"
)

// Request is a vhost-user request code (vhost-user.rst, "Front-end message
// types").
type Request uint32

// Request codes of the specification (vhost-user.rst, "Front-end message
// types"). The requests table says which of them vhostd implements.
const (
	GetFeatures         Request = 1
	SetFeatures         Request = 2
	SetOwner            Request = 3
	ResetOwner          Request = 4
	SetMemTable         Request = 5
	SetLogBase          Request = 6
	SetLogFD            Request = 7
	SetVringNum         Request = 8
	SetVringAddr        Request = 9
	SetVringBase        Request = 10
	GetVringBase        Request = 11
	SetVringKick        Request = 12
	SetVringCall        Request = 13
	SetVringErr         Request = 14
	GetProtocolFeatures Request = 15
	SetProtocolFeatures Request = 16
	GetQueueNum         Request = 17
	SetVringEnable      Request = 18
	SendRARP            Request = 19
	NetSetMTU           Request = 20
	SetBackendReqFD     Request = 21
	IOTLBMsg            Request = 22
	SetVringEndian      Request = 23
	GetConfig           Request = 24
	SetConfig           Request = 25
	CreateCryptoSession Request = 26
	CloseCryptoSession  Request = 27
	PostcopyAdvise      Request = 28
	PostcopyListen      Request = 29
	PostcopyEnd         Request = 30
	GetInflightFD       Request = 31
	SetInflightFD       Request = 32
	GPUSetSocket        Request = 33
	ResetDevice         Request = 34
	VringKick           Request = 35
	GetMaxMemSlots      Request = 36
	AddMemReg           Request = 37
	RemMemReg           Request = 38
	SetStatus           Request = 39
	GetStatus           Request = 40
	GetSharedObject     Request = 41
	SetDeviceStateFD    Request = 42
	CheckDeviceState    Request = 43
)

// requestNames names every request code of the specification, implemented
// or not, so that logs say SET_LOG_BASE rather than "request 6".
var requestNames = map[Request]string{
	GetFeatures: "GET_FEATURES", SetFeatures: "SET_FEATURES", SetOwner: "SET_OWNER",
	ResetOwner: "RESET_OWNER", SetMemTable: "SET_MEM_TABLE", SetLogBase: "SET_LOG_BASE",
	SetLogFD: "SET_LOG_FD", SetVringNum: "SET_VRING_NUM", SetVringAddr: "SET_VRING_ADDR",
	SetVringBase: "SET_VRING_BASE", GetVringBase: "GET_VRING_BASE", SetVringKick: "SET_VRING_KICK",
	SetVringCall: "SET_VRING_CALL", SetVringErr: "SET_VRING_ERR",
	GetProtocolFeatures: "GET_PROTOCOL_FEATURES", SetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	GetQueueNum: "GET_QUEUE_NUM", SetVringEnable: "SET_VRING_ENABLE", SendRARP: "SEND_RARP",
	NetSetMTU: "NET_SET_MTU", SetBackendReqFD: "SET_BACKEND_REQ_FD", IOTLBMsg: "IOTLB_MSG",
	SetVringEndian: "SET_VRING_ENDIAN", GetConfig: "GET_CONFIG", SetConfig: "SET_CONFIG",
	CreateCryptoSession: "CREATE_CRYPTO_SESSION", CloseCryptoSession: "CLOSE_CRYPTO_SESSION",
	PostcopyAdvise: "POSTCOPY_ADVISE", PostcopyListen: "POSTCOPY_LISTEN", PostcopyEnd: "POSTCOPY_END",
	GetInflightFD: "GET_INFLIGHT_FD", SetInflightFD: "SET_INFLIGHT_FD", GPUSetSocket: "GPU_SET_SOCKET",
	ResetDevice: "RESET_DEVICE", VringKick: "VRING_KICK", GetMaxMemSlots: "GET_MAX_MEM_SLOTS",
	AddMemReg: "ADD_MEM_REG", RemMemReg: "REM_MEM_REG", SetStatus: "SET_STATUS", GetStatus: "GET_STATUS",
	GetSharedObject: "GET_SHARED_OBJECT", SetDeviceStateFD: "SET_DEVICE_STATE_FD",
	CheckDeviceState: "CHECK_DEVICE_STATE",
}

// Header flags.
const (
	flagVersionMask = 0x3
	flagVersion     = 0x1
	flagReply       = 0x4
	flagNeedReply   = 0x8
)

const (
	headerSize = 12
	// maxPayload bounds what a frontend can make vhostd read for one
	// message; the largest message vhostd accepts is SET_MEM_TABLE with
	// eight regions (8 + 8*32 bytes).
	maxPayload = 4096
	// maxFDs is the most fds a message may carry (SET_MEM_TABLE's eight
	// regions).
	maxFDs = 8
	// vringIdxMask and vringNoFD split the u64 of SET_VRING_KICK/CALL/ERR.
	vringIdxMask = 0xff
	vringNoFD    = 0x100
)

// sizeRule says how long a request's payload must be.
type sizeRule int

const (
	sizeExact   sizeRule = iota // exactly size bytes
	sizeAtLeast                 // size bytes or more (SET_MEM_TABLE: checked again per region count)
)

// fdRule says how many fds a request carries.
type fdRule int

const (
	fdsNone     fdRule = iota // none
	fdsOne                    // exactly one
	fdsOptional               // zero or one, per the no-fd flag
	fdsRegions                // one per region
	fdsAny                    // any; vhostd closes them (REM_MEM_REG, from some QEMUs)
)

// requestSpec is one row of the request table: what a well-formed request
// looks like. Requests not in the table are refused.
type requestSpec struct {
	size     int
	sizeRule sizeRule
	fds      fdRule
	protocol int  // protocol feature the request needs, or -1
	replies  bool // sends a reply of its own (REPLY_ACK does not apply)
}

var requests = map[Request]requestSpec{
	GetFeatures:         {0, sizeExact, fdsNone, -1, true},
	SetFeatures:         {8, sizeExact, fdsNone, -1, false},
	SetOwner:            {0, sizeExact, fdsNone, -1, false},
	ResetOwner:          {0, sizeExact, fdsNone, -1, false},
	SetMemTable:         {8, sizeAtLeast, fdsRegions, -1, false},
	SetLogBase:          {logPayloadSize, sizeExact, fdsOne, -1, false}, // replies with LOG_SHMFD: see device.replies
	SetLogFD:            {0, sizeAtLeast, fdsOne, -1, false},
	SetVringNum:         {8, sizeExact, fdsNone, -1, false},
	SetVringAddr:        {40, sizeExact, fdsNone, -1, false},
	SetVringBase:        {8, sizeExact, fdsNone, -1, false},
	GetVringBase:        {8, sizeExact, fdsNone, -1, true},
	SetVringKick:        {8, sizeExact, fdsOptional, -1, false},
	SetVringCall:        {8, sizeExact, fdsOptional, -1, false},
	SetVringErr:         {8, sizeExact, fdsOptional, -1, false},
	GetProtocolFeatures: {0, sizeExact, fdsNone, -1, true},
	SetProtocolFeatures: {8, sizeExact, fdsNone, -1, false},
	GetQueueNum:         {0, sizeExact, fdsNone, ProtocolMQ, true},
	SetVringEnable:      {8, sizeExact, fdsNone, -1, false},
	SendRARP:            {8, sizeExact, fdsNone, ProtocolRARP, false},
	NetSetMTU:           {8, sizeExact, fdsNone, ProtocolNetMTU, false},
	GetConfig:           {configHeaderSize, sizeAtLeast, fdsNone, ProtocolConfig, true},
	SetConfig:           {configHeaderSize, sizeAtLeast, fdsNone, ProtocolConfig, false},
	ResetDevice:         {0, sizeExact, fdsNone, ProtocolResetDevice, false},
	SetStatus:           {8, sizeExact, fdsNone, ProtocolStatus, false},
	GetStatus:           {0, sizeExact, fdsNone, ProtocolStatus, true},
	GetMaxMemSlots:      {0, sizeExact, fdsNone, ProtocolConfigureMemSlots, true},
	AddMemReg:           {40, sizeExact, fdsOne, ProtocolConfigureMemSlots, false},
	RemMemReg:           {40, sizeExact, fdsAny, ProtocolConfigureMemSlots, false},
	GetInflightFD:       {inflightPayloadSize, sizeExact, fdsNone, ProtocolInflightShmfd, true},
	SetInflightFD:       {inflightPayloadSize, sizeExact, fdsOne, ProtocolInflightShmfd, false},
}

func (r Request) String() string {
	if n, ok := requestNames[r]; ok {
		return n
	}
	return fmt.Sprintf("request %d", uint32(r))
}

// implemented reports whether vhostd serves r.
func (r Request) implemented() bool {
	_, ok := requests[r]
	return ok
}

// Header is the fixed part of every message.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// NeedReply reports whether the frontend asked for a REPLY_ACK.
func (h Header) NeedReply() bool { return h.Flags&flagNeedReply != 0 }

func decodeHeader(b []byte) Header {
	return Header{
		Request: Request(binary.LittleEndian.Uint32(b[0:])),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
}

func (h Header) encode(b []byte) {
	binary.LittleEndian.PutUint32(b[0:], uint32(h.Request))
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Size)
}

// Message is one decoded request with the fds that came with it. The
// receiver of a Message owns its fds.
type Message struct {
	Header
	Payload []byte
	FDs     []int
}

// validateHeader checks a header before its payload is read.
func validateHeader(h Header) error {
	if h.Flags&flagVersionMask != flagVersion {
		return fmt.Errorf("%v: protocol version %d, want 1", h.Request, h.Flags&flagVersionMask)
	}
	if h.Flags&flagReply != 0 {
		return fmt.Errorf("%v: reply flag set on a request", h.Request)
	}
	if h.Size > maxPayload {
		return fmt.Errorf("%v: payload of %d bytes exceeds the %d-byte limit", h.Request, h.Size, maxPayload)
	}
	return nil
}

// Validate checks a message against the request table: known request,
// payload size, fd count.
func (m *Message) Validate() error {
	spec, ok := requests[m.Request]
	if !ok {
		return fmt.Errorf("unsupported %v", m.Request)
	}
	n := len(m.Payload)
	switch spec.sizeRule {
	case sizeExact:
		if n != spec.size {
			return fmt.Errorf("%s: payload is %d bytes, want %d", m.Request, n, spec.size)
		}
	case sizeAtLeast:
		if n < spec.size {
			return fmt.Errorf("%s: payload is %d bytes, want at least %d", m.Request, n, spec.size)
		}
	}
	nfd := len(m.FDs)
	switch spec.fds {
	case fdsNone:
		if nfd != 0 {
			return fmt.Errorf("%s: carries %d fds, want none", m.Request, nfd)
		}
	case fdsOne:
		if nfd != 1 {
			return fmt.Errorf("%s: carries %d fds, want 1", m.Request, nfd)
		}
	case fdsOptional:
		v := binary.LittleEndian.Uint64(m.Payload)
		want := 1
		if v&vringNoFD != 0 {
			want = 0
		}
		if nfd != want {
			return fmt.Errorf("%s: carries %d fds, want %d (payload %#x)", m.Request, nfd, want, v)
		}
	case fdsRegions:
		// checked by decodeMemTable, which knows the region count
	}
	return nil
}

// U64 decodes a payload that is a single u64.
func (m *Message) U64() uint64 { return binary.LittleEndian.Uint64(m.Payload) }

// VringState is the payload of SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE.
type VringState struct {
	Index uint32
	Num   uint32
}

func (m *Message) vringState() VringState {
	return VringState{Index: binary.LittleEndian.Uint32(m.Payload), Num: binary.LittleEndian.Uint32(m.Payload[4:])}
}

// VringAddr is the payload of SET_VRING_ADDR: the ring's parts as frontend
// virtual addresses.
type VringAddr struct {
	Index uint32
	Flags uint32 // bit 0: log writes to the used ring
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

func (m *Message) vringAddr() VringAddr {
	p := m.Payload
	return VringAddr{
		Index: binary.LittleEndian.Uint32(p[0:]),
		Flags: binary.LittleEndian.Uint32(p[4:]),
		Desc:  binary.LittleEndian.Uint64(p[8:]),
		Used:  binary.LittleEndian.Uint64(p[16:]),
		Avail: binary.LittleEndian.Uint64(p[24:]),
		Log:   binary.LittleEndian.Uint64(p[32:]),
	}
}

// Validate checks the alignment rules of the virtio specification.
func (a VringAddr) Validate() error {
	switch {
	case a.Desc%16 != 0:
		return fmt.Errorf("descriptor table %#x not 16-byte aligned", a.Desc)
	case a.Avail%2 != 0:
		return fmt.Errorf("available ring %#x not 2-byte aligned", a.Avail)
	case a.Used%4 != 0:
		return fmt.Errorf("used ring %#x not 4-byte aligned", a.Used)
	}
	return nil
}

func decodeRegion(p []byte) guestmem.RegionSpec {
	return guestmem.RegionSpec{
		GuestPhysAddr: binary.LittleEndian.Uint64(p[0:]),
		Size:          binary.LittleEndian.Uint64(p[8:]),
		UserAddr:      binary.LittleEndian.Uint64(p[16:]),
		MmapOffset:    binary.LittleEndian.Uint64(p[24:]),
	}
}

// decodeMemTable decodes SET_MEM_TABLE: u32 count, u32 padding, then count
// regions of 32 bytes, one fd each.
func (m *Message) decodeMemTable() ([]guestmem.RegionSpec, error) {
	n := binary.LittleEndian.Uint32(m.Payload)
	if n == 0 || n > maxFDs {
		return nil, fmt.Errorf("%d regions, want 1 to %d", n, maxFDs)
	}
	if want := 8 + 32*int(n); len(m.Payload) != want {
		return nil, fmt.Errorf("payload is %d bytes, want %d for %d regions", len(m.Payload), want, n)
	}
	if len(m.FDs) != int(n) {
		return nil, fmt.Errorf("%d regions but %d fds", n, len(m.FDs))
	}
	specs := make([]guestmem.RegionSpec, n)
	for i := range specs {
		specs[i] = decodeRegion(m.Payload[8+32*i:])
	}
	return specs, nil
}

// decodeMemReg decodes ADD_MEM_REG/REM_MEM_REG: u64 padding, one region.
func (m *Message) decodeMemReg() guestmem.RegionSpec { return decodeRegion(m.Payload[8:]) }
