package offload

// Reason says why a guest's header and frame were refused, or ReasonOK.
// Its String is a stable snake_case name, fit to be a metrics label.
type Reason uint8

// The reasons, each a drop counter of its own. Names never change once
// released: dashboards key on them.
const (
	ReasonOK                   Reason = iota
	ReasonHeaderShort                 // fewer bytes than a virtio-net header
	ReasonFlagsInvalid                // DATA_VALID, RSC_INFO or unknown flags on a transmitted frame
	ReasonOffloadNotNegotiated        // NEEDS_CSUM without CSUM, or a gso_type without its HOST_* feature
	ReasonGSOTypeUnknown              // a gso_type value the spec does not define
	ReasonGSOWithoutCsum              // a GSO frame without NEEDS_CSUM (spec: the driver MUST set it)
	ReasonGSOSizeZero                 // a GSO frame with gso_size 0
	ReasonHdrLenBeyondFrame           // hdr_len larger than the frame
	ReasonCsumOutsideFrame            // csum_start or the 2-byte checksum field outside the frame
	ReasonCsumNotL4                   // a GSO frame whose checksum is not the TCP/UDP one
	ReasonFrameShort                  // shorter than an Ethernet header
	ReasonL3Invalid                   // bad IP version/IHL, truncated IP header, or IPv4 fragment
	ReasonIPLenMismatch               // a GSO frame whose IP length field disagrees with the frame
	ReasonL4Unsupported               // a GSO frame behind an IPv6 fragment, AH or too many extension headers
	ReasonL4Invalid                   // truncated TCP/UDP header, or TCP data offset < 5
	ReasonGSOTypeMismatch             // gso_type disagrees with the frame (not IP, wrong IP version, not TCP/UDP)
	ReasonNoPayload                   // a GSO frame with no payload after its headers
	ReasonTooManySegments             // more segments than MaxSegments
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonOK:                   "ok",
	ReasonHeaderShort:          "header_short",
	ReasonFlagsInvalid:         "flags_invalid",
	ReasonOffloadNotNegotiated: "not_negotiated",
	ReasonGSOTypeUnknown:       "gso_type_unknown",
	ReasonGSOWithoutCsum:       "gso_without_csum",
	ReasonGSOSizeZero:          "gso_size_zero",
	ReasonHdrLenBeyondFrame:    "hdr_len_beyond_frame",
	ReasonCsumOutsideFrame:     "csum_outside_frame",
	ReasonCsumNotL4:            "csum_not_l4",
	ReasonFrameShort:           "frame_short",
	ReasonL3Invalid:            "l3_invalid",
	ReasonIPLenMismatch:        "ip_len_mismatch",
	ReasonL4Unsupported:        "l4_unsupported",
	ReasonL4Invalid:            "l4_invalid",
	ReasonGSOTypeMismatch:      "gso_type_mismatch",
	ReasonNoPayload:            "no_payload",
	ReasonTooManySegments:      "too_many_segments",
}

// NumReasons is the number of Reason values, for sizing counter arrays
// indexed by Reason.
const NumReasons = int(numReasons)

// String returns the reason's snake_case name.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}
