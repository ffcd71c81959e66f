package transport

import "errors"

var (
	// ErrUnadvertisable is returned by NewStreamLayer and Listen when the
	// address other nodes would use to reach this one is missing, malformed,
	// has port 0, or has an unspecified host (0.0.0.0, ::, or empty). Raft
	// stores the advertised address in its configuration, so a value that
	// peers cannot dial would make the node unreachable after it joins.
	ErrUnadvertisable = errors.New("transport: address is not advertisable")

	// ErrInvalidConfig is returned by NewStreamLayer and Listen when the
	// Config cannot work, for example a ServerTLS without any certificate
	// source. Failing at construction is preferable to failing every
	// handshake at run time.
	ErrInvalidConfig = errors.New("transport: invalid config")
)
