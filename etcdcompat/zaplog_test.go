package etcdcompat

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestZapLoggerWritesThroughHclog logs through the zap logger the etcd
// client gets and checks what reaches the node's hclog logger, at INFO:
// levels mapped, debug not printed, fields and
// With fields as key/value pairs.
func TestZapLoggerWritesThroughHclog(t *testing.T) {
	var buf bytes.Buffer
	hl := hclog.New(&hclog.LoggerOptions{Name: "n1.etcd", Level: hclog.Info, Output: &buf, DisableTime: true})
	zl := zapLogger(hl)
	retry := zl.With(zap.String("target", "etcd-endpoints://0xc0/127.0.0.1:2379"), zap.Int("with_n", 7))

	tests := []struct {
		name   string
		log    func()
		want   []string // substrings of the one line expected; none: nothing printed
		notAny []string // substrings the line must not hold
	}{
		{
			name: "debug is below the node's level",
			log:  func() { retry.Debug("retrying of unary invoker", zap.Uint("attempt", 1)) },
		},
		{
			name: "info with fields",
			log: func() {
				zl.Info("Auto sync endpoints failed.", zap.Error(errors.New("boom")), zap.Duration("took", 1500*time.Millisecond))
			},
			want: []string{"[INFO]", "n1.etcd.client: Auto sync endpoints failed.:", "error=boom", "took=1.5s"},
		},
		{
			name: "warn with With fields and its own",
			log: func() {
				retry.Warn("retrying of unary invoker failed", zap.String("method", "/etcdserverpb.KV/Range"), zap.Uint("attempt", 2))
			},
			want: []string{"[WARN]", "n1.etcd.client: retrying of unary invoker failed:",
				"target=etcd-endpoints://0xc0/127.0.0.1:2379", "with_n=7", "method=/etcdserverpb.KV/Range", "attempt=2"},
		},
		{
			name: "a field given again overrides a With field",
			log:  func() { retry.Warn("again", zap.Int("with_n", 8)) },
			want: []string{"[WARN]", "with_n=8"}, notAny: []string{"with_n=7"},
		},
		{
			name: "error",
			log:  func() { zl.Error("streamer failed to create ClientStream", zap.Error(errors.New("unavailable"))) },
			want: []string{"[ERROR]", "streamer failed to create ClientStream", "error=unavailable"},
		},
		{
			name: "DPanic logs as an error",
			log:  func() { zl.DPanic("odd") },
			want: []string{"[ERROR]", "n1.etcd.client: odd"},
		},
		{
			name: "a zap logger name becomes part of the hclog name",
			log:  func() { zl.Named("lease").Warn("keepalive failed") },
			want: []string{"[WARN]", "n1.etcd.client.lease: keepalive failed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.log()
			out := buf.String()
			if len(tc.want) == 0 {
				if out != "" {
					t.Fatalf("printed %q, want nothing", out)
				}
				return
			}
			if strings.Count(out, "\n") != 1 {
				t.Fatalf("printed %q, want one line", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("line %q lacks %q", out, w)
				}
			}
			for _, n := range tc.notAny {
				if strings.Contains(out, n) {
					t.Errorf("line %q holds %q", out, n)
				}
			}
		})
	}
}

// TestZapLoggerEnabledFollowsHclog checks that the zap side is enabled
// exactly for the levels the hclog logger prints, also after its level
// changes, so that the etcd client skips building entries nobody prints.
func TestZapLoggerEnabledFollowsHclog(t *testing.T) {
	hl := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: &bytes.Buffer{}})
	core := zapLogger(hl).Core()
	levels := []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel, zapcore.DPanicLevel, zapcore.PanicLevel, zapcore.FatalLevel}
	for _, tc := range []struct {
		level hclog.Level
		want  []bool // for levels, in order
	}{
		{hclog.Trace, []bool{true, true, true, true, true, true, true}},
		{hclog.Debug, []bool{true, true, true, true, true, true, true}},
		{hclog.Info, []bool{false, true, true, true, true, true, true}},
		{hclog.Warn, []bool{false, false, true, true, true, true, true}},
		{hclog.Error, []bool{false, false, false, true, true, true, true}},
		{hclog.Off, []bool{false, false, false, false, false, false, false}},
	} {
		hl.SetLevel(tc.level)
		for i, l := range levels {
			if got := core.Enabled(l); got != tc.want[i] {
				t.Errorf("hclog at %s: zap %s enabled = %v, want %v", tc.level, l, got, tc.want[i])
			}
		}
	}
	if zapLogger(nil).Core().Enabled(zapcore.FatalLevel) {
		t.Error("a nil hclog logger gives a zap logger that logs")
	}
}
