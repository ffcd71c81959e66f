package daemon

import (
	"github.com/ordinal-dev/ordinal/cluster"
	"github.com/ordinal-dev/ordinal/snowflake"
)

// SnowflakeBackendOf is the Snowflake backend a Raft node's daemon gives
// its snowflake.Service, for tests of what the backend guarantees.
func SnowflakeBackendOf(n *cluster.Node) snowflake.Backend { return &snowflakeBackend{node: n} }
