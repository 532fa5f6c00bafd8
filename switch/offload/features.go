package offload

// Features is a virtio-net feature word as negotiated (bit n is feature n),
// so the acked features of a device can be passed as they are.
type Features uint64

// The offload feature bits (virtio 1.2, 5.1.3).
const (
	FeatureCsum      Features = 1 << 0  // VIRTIO_NET_F_CSUM: the device takes partial checksums
	FeatureGuestCsum Features = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: the driver takes partial checksums
	FeatureGuestTSO4 Features = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4
	FeatureGuestTSO6 Features = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6
	FeatureGuestECN  Features = 1 << 9  // VIRTIO_NET_F_GUEST_ECN
	FeatureGuestUFO  Features = 1 << 10 // VIRTIO_NET_F_GUEST_UFO
	FeatureHostTSO4  Features = 1 << 11 // VIRTIO_NET_F_HOST_TSO4
	FeatureHostTSO6  Features = 1 << 12 // VIRTIO_NET_F_HOST_TSO6
	FeatureHostECN   Features = 1 << 13 // VIRTIO_NET_F_HOST_ECN
	FeatureHostUFO   Features = 1 << 14 // VIRTIO_NET_F_HOST_UFO
	FeatureGuestUSO4 Features = 1 << 54 // VIRTIO_NET_F_GUEST_USO4
	FeatureGuestUSO6 Features = 1 << 55 // VIRTIO_NET_F_GUEST_USO6
	FeatureHostUSO   Features = 1 << 56 // VIRTIO_NET_F_HOST_USO
)

// Has reports whether every bit of want is set.
func (f Features) Has(want Features) bool { return f&want == want }
