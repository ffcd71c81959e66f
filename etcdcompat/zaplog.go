package etcdcompat

import (
	"maps"
	"slices"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapLogger returns a zap logger that writes through hl, named "client":
// the etcd client logs with zap, and this puts its logs into the node's
// log, at the node's level. Nil hl means no logs.
func zapLogger(hl hclog.Logger) *zap.Logger {
	if hl == nil {
		return zap.NewNop()
	}
	return zap.New(&hclogCore{logger: hl.Named("client")})
}

// hclogCore is a zapcore.Core that writes to an hclog logger. It is
// enabled only for the levels the hclog logger prints, read at each entry,
// so that a node at INFO does not pay for the etcd client's debug logs,
// and one whose level changes at run time follows it.
type hclogCore struct {
	logger hclog.Logger
	fields []zapcore.Field // added by With, oldest first
}

// hclogLevel maps a zap level to hclog's: zap's levels above Error (DPanic,
// Panic, Fatal) have no hclog counterpart and log as errors (zap itself
// still panics or exits after Panic and Fatal).
func hclogLevel(l zapcore.Level) hclog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return hclog.Debug
	case l == zapcore.InfoLevel:
		return hclog.Info
	case l == zapcore.WarnLevel:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (c *hclogCore) Enabled(l zapcore.Level) bool {
	switch hclogLevel(l) {
	case hclog.Debug:
		return c.logger.IsDebug()
	case hclog.Info:
		return c.logger.IsInfo()
	case hclog.Warn:
		return c.logger.IsWarn()
	default:
		return c.logger.IsError()
	}
}

func (c *hclogCore) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	return &hclogCore{logger: c.logger, fields: append(slices.Clip(c.fields), fields...)}
}

func (c *hclogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// Write logs ent with the With fields and then fields as hclog key/value
// pairs, sorted by key; a field given twice keeps its last value.
func (c *hclogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	args := make([]any, 0, 2*len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		args = append(args, k, enc.Fields[k])
	}
	lg := c.logger
	if ent.LoggerName != "" {
		lg = lg.Named(ent.LoggerName)
	}
	lg.Log(hclogLevel(ent.Level), ent.Message, args...)
	return nil
}

// Sync does nothing: hclog writes each line as it is logged.
func (c *hclogCore) Sync() error { return nil }
