// Package cli holds what the command lines of ordinal's binaries share:
// cmd/ordinal, which serves and talks to nodes, and cmd/ordinal-bench, the
// load generator. Flags are parsed the same way in both (before and after
// positional arguments, each with an environment variable standing in for
// it), errors in how a command was invoked exit with status 2, and the
// flags that secure a client's connections (ConnFlags) mean the same
// everywhere.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvPrefix prefixes the environment variable that stands in for each
// flag: --data-dir is read from ORDINAL_DATA_DIR when not given on the
// command line. Both binaries use it, so that ordinal's client commands
// and ordinal-bench read the same ORDINAL_TLS_CA_FILE and the like.
const EnvPrefix = "ORDINAL_"

// ErrHelp is returned when the user asked for --help: usage was printed,
// and the command exits 0 without doing anything.
var ErrHelp = flag.ErrHelp

// envName is the environment variable of the flag flagName.
func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// NewFlagSet returns a flag set that reports errors instead of exiting and
// prints usage to stderr with each flag's environment variable. usage is
// the command's synopsis and description, printed after "Usage: ".
func NewFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := os.Stderr
		fmt.Fprintf(w, "Usage: %s\n\nFlags:\n", usage)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(w, "  --%s\n        %s%s [env %s]\n", f.Name, f.Usage, def, envName(f.Name))
		})
	}
	return fs
}

// parseFlags parses args, allowing flags before and after positional
// arguments, then fills every flag not given on the command line from its
// environment variable. It returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.Usage()
			}
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			positional = append(positional, rest[1:]...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("invalid %s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return positional, err
}

// ParseCommandFlags parses the flags of the command cmd (a flag set of
// NewFlagSet) from args and the environment, allowing flags before and
// after positional arguments, and returns the positional arguments. Every
// command of both binaries parses its flags with it.
//
// It prints usage exactly once and only on --help (returning ErrHelp): the
// flag package prints it on every parse error, which would bury the one
// line that says what is wrong. Other errors come back prefixed with cmd
// and marked as usage errors.
func ParseCommandFlags(cmd string, fs *flag.FlagSet, args []string) ([]string, error) {
	printUsage := fs.Usage
	fs.Usage = func() {}
	positional, err := parseFlags(fs, args)
	fs.Usage = printUsage
	switch {
	case errors.Is(err, ErrHelp):
		printUsage()
		return nil, err
	case err != nil:
		return nil, &UsageError{Err: fmt.Errorf("%s: %w", cmd, err)}
	}
	return positional, nil
}

// NoArgs is ParseCommandFlags for a command that takes flags only: a
// positional argument is a usage error.
func NoArgs(cmd string, fs *flag.FlagSet, args []string) error {
	positional, err := ParseCommandFlags(cmd, fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return UsageErrorf("%s: unexpected argument %q: the command takes only flags", cmd, positional[0])
	}
	return nil
}

// ExplicitlySet reports whether the flag name was given on the command
// line or through its environment variable, as opposed to left at its
// default.
func ExplicitlySet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// UsageError marks an error in how a command was invoked (an unknown
// command or flag, a missing or malformed argument), as opposed to a
// failure while doing the work, so that it exits with status 2.
type UsageError struct {
	// Err says what is wrong; it names the command.
	Err error
}

// Error returns the message of Err.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *UsageError) Unwrap() error { return e.Err }

// UsageErrorf returns a UsageError whose Err is fmt.Errorf(format,
// args...).
func UsageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps a command's error, which is not nil, to the process exit
// status: 0 when the user asked for help (usage was printed and nothing
// failed), 2 when the command line itself is wrong (a UsageError), 1 for
// everything else.
func ExitCode(err error) int {
	var u *UsageError
	switch {
	case errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// Main runs a binary's commands: run gets the arguments after the
// program's name. When run fails, Main prints the error on one line of
// stderr prefixed with prog (nothing for ErrHelp, whose usage run printed
// already) and exits with ExitCode's status.
func Main(prog string, run func(args []string) error) {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		}
		os.Exit(ExitCode(err))
	}
}
