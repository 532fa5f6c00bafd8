// Package offload is the virtio-net offload library: the virtio-net header
// (virtio 1.2 section 5.1.6), validation of a header a guest sent against
// its frame and negotiated features, software checksum completion, software
// segmentation (GSO) of TCP and UDP (USO) super-frames, and the header a
// receiver with its own offload features should see.
//
// It is for the switch's data path: nothing here allocates per frame, takes
// a lock or logs. Every function treats the header and the frame as hostile
// and never reads or writes outside the slices it is given.
//
// It is not: a TCP/IP stack (it parses only what it must to segment), an
// IP fragmenter (UFO super-frames are validated but not segmented), or the
// switch's wiring (the switch decides per destination what to do with
// ForReceiver's answer).
package offload
