package client

import "context"

// WithLookup makes the Client look DNS names up with lookup instead of
// the system's resolver, so that tests can give a name several addresses
// without a DNS server.
func WithLookup(lookup func(ctx context.Context, host string) ([]string, error)) Option {
	return func(o *options) { o.lookup = lookup }
}
