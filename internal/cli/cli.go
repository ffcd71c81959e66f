// Package cli holds what the command lines of ordinal's binaries share:
// cmd/ordinal, which serves and talks to nodes, and cmd/ordinal-bench, the
// load generator. Flags are parsed the same way in both (before and after
// positional arguments, each with an environment variable standing in for
// it, and for commands with a --config flag a YAML file), errors in how a
// command was invoked exit with status 2, and the flags that secure a
// client's connections (ConnFlags) mean the same everywhere.
//
// The command line is parsed with the standard flag package; what the
// command line left unset is filled by github.com/peterbourgon/ff/v3,
// from the environment and then from the config file, so the precedence
// is flag > environment > file > default.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
)

// EnvPrefix prefixes the environment variable that stands in for each
// flag: --data-dir is read from ORDINAL_DATA_DIR when not given on the
// command line. Both binaries use it, so that ordinal's client commands
// and ordinal-bench read the same ORDINAL_TLS_CA_FILE and the like. A
// variable that is set but empty counts as unset.
const EnvPrefix = "ORDINAL_"

// ConfigFlag is the name of the flag that names a command's config file
// (AddConfigFlag).
const ConfigFlag = "config"

// ErrHelp is returned when the user asked for --help: usage was printed,
// and the command exits 0 without doing anything.
var ErrHelp = flag.ErrHelp

// stderr is where usage goes; tests replace it.
var stderr io.Writer = os.Stderr

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
	SetUsage(fs, usage, nil)
	return fs
}

// FlagGroup is a heading of a command's usage and the flags printed under
// it, in this order.
type FlagGroup struct {
	Heading string
	Flags   []string
}

// SetUsage makes fs print usage (the command's synopsis and description)
// and then its flags: under the groups' headings when there are groups,
// else all together in name order. A flag no group names is still printed,
// under "Other flags" (CheckGroups finds those in a test).
func SetUsage(fs *flag.FlagSet, usage string, groups []FlagGroup) {
	fs.Usage = func() {
		w := stderr
		fmt.Fprintf(w, "Usage: %s\n", usage)
		if fs.Lookup(ConfigFlag) != nil && isConfig(fs.Lookup(ConfigFlag)) {
			fmt.Fprintf(w, "\nEvery flag can also be set by its environment variable, %s<FLAG>, or by the\n"+
				"key of its name in the YAML file --%s names (grpc-addr: 127.0.0.1:34904). The\n"+
				"command line wins over the environment, which wins over the file.\n", EnvPrefix, ConfigFlag)
		}
		if len(groups) == 0 {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.VisitAll(func(f *flag.Flag) { printFlag(w, f) })
			return
		}
		printed := map[string]bool{}
		for _, g := range groups {
			fmt.Fprintf(w, "\n%s:\n", g.Heading)
			for _, name := range g.Flags {
				if f := fs.Lookup(name); f != nil && !printed[name] {
					printFlag(w, f)
					printed[name] = true
				}
			}
		}
		first := true
		fs.VisitAll(func(f *flag.Flag) {
			if printed[f.Name] {
				return
			}
			if first {
				fmt.Fprintf(w, "\nOther flags:\n")
				first = false
			}
			printFlag(w, f)
		})
	}
}

// printFlag prints one flag of a usage: its name, what it means, its
// default and where else it can be set.
func printFlag(w io.Writer, f *flag.Flag) {
	def := ""
	if f.DefValue != "" {
		def = fmt.Sprintf(" (default %q)", f.DefValue)
	}
	env := " [env " + envName(f.Name) + "]"
	if commandLineOnly(f) {
		env = ""
	}
	fmt.Fprintf(w, "  --%s\n        %s%s%s\n", f.Name, f.Usage, def, env)
}

// CheckGroups reports the flags of fs that no group names, and the names
// groups list that are no flag of fs or are listed twice, so that a test
// can make sure a new flag is not forgotten in a command's usage.
func CheckGroups(fs *flag.FlagSet, groups []FlagGroup) error {
	var problems []string
	seen := map[string]bool{}
	for _, g := range groups {
		for _, name := range g.Flags {
			switch {
			case fs.Lookup(name) == nil:
				problems = append(problems, fmt.Sprintf("group %q lists --%s, which is no flag", g.Heading, name))
			case seen[name]:
				problems = append(problems, fmt.Sprintf("--%s is listed twice", name))
			}
			seen[name] = true
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !seen[f.Name] {
			problems = append(problems, fmt.Sprintf("--%s is in no group", f.Name))
		}
	})
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// AddConfigFlag gives the command of fs a --config flag (and its
// ORDINAL_CONFIG variable): a YAML file whose keys are the command's flag
// names and whose values fill the flags neither the command line nor the
// environment set. A list flag (ListVar) takes a YAML list or a
// comma-separated string; every other flag one value. A key that is no
// flag of the command is an error naming it.
func AddConfigFlag(fs *flag.FlagSet) {
	fs.Var(&configValue{}, ConfigFlag, "YAML file of flag values, keys named as the flags (grpc-addr: ...); flags and environment variables win over it")
}

// configValue is the value of the --config flag: the file's path.
type configValue struct{ path string }

func (v *configValue) String() string {
	if v == nil {
		return ""
	}
	return v.path
}

func (v *configValue) Set(s string) error { v.path = s; return nil }

// isConfig reports whether f is a --config flag of AddConfigFlag.
func isConfig(f *flag.Flag) bool {
	_, ok := f.Value.(*configValue)
	return ok
}

// ListVar defines a flag holding a comma-separated list in *p (split it
// with SplitList). On the command line and in its environment variable it
// is one comma-separated string; in a config file it may also be a YAML
// list.
func ListVar(fs *flag.FlagSet, p *string, name, value, usage string) {
	*p = value
	fs.Var((*listValue)(p), name, usage)
}

// listValue is a ListVar flag: a string the config file may give as a
// list.
type listValue string

func (v *listValue) String() string {
	if v == nil {
		return ""
	}
	return string(*v)
}

func (v *listValue) Set(s string) error { *v = listValue(s); return nil }

// Alias is a deprecated spelling of another flag, kept so that old command
// lines still work. It is read from the command line only: its environment
// variable and config file key may mean something else by now.
type Alias struct {
	fs           *flag.FlagSet
	name, target string
	used         bool
}

// DeprecatedAlias defines the flag name as a deprecated command-line
// spelling of the flag target, which must be defined already: --name V
// sets --target to V. The command warns when Used.
func DeprecatedAlias(fs *flag.FlagSet, name, target string) *Alias {
	if fs.Lookup(target) == nil {
		panic("cli: alias --" + name + " of --" + target + ", which is not defined")
	}
	a := &Alias{fs: fs, name: name, target: target}
	fs.Var(a, name, fmt.Sprintf("deprecated: the same as --%s, accepted on the command line only", target))
	return a
}

func (a *Alias) String() string { return "" }

// Set sets the flag the alias stands for.
func (a *Alias) Set(s string) error {
	a.used = true
	return a.fs.Set(a.target, s)
}

// IsBoolFlag lets --name stand alone when the target is a bool flag.
func (a *Alias) IsBoolFlag() bool {
	if a == nil || a.fs == nil {
		return false
	}
	b, ok := a.fs.Lookup(a.target).Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Used reports whether the command line used the alias.
func (a *Alias) Used() bool { return a.used }

// Warning says what to use instead of the alias.
func (a *Alias) Warning() string {
	if f := a.fs.Lookup(ConfigFlag); f != nil && isConfig(f) {
		return fmt.Sprintf("--%s is deprecated: use --%s (%s, or %s: in a config file)", a.name, a.target, envName(a.target), a.target)
	}
	return fmt.Sprintf("--%s is deprecated: use --%s (%s)", a.name, a.target, envName(a.target))
}

// commandLineOnly reports whether f is read from the command line alone,
// never from the environment or a config file.
func commandLineOnly(f *flag.Flag) bool {
	_, ok := f.Value.(*Alias)
	return ok
}

// parseFlags parses args, allowing flags before and after positional
// arguments, then fills every flag not given on the command line from its
// environment variable and, if the command has a --config flag that is
// set, from the file. It returns the positional arguments.
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
	return positional, fillFromEnvAndFile(fs)
}

// fillFromEnvAndFile has ff fill the flags of fs the command line did not
// set: from their environment variables, then from the config file.
//
// ff parses a flag set of its own, holding only the flags it may fill:
// each forwards to fs.Set, so that fs knows which flags were set (Visit,
// ExplicitlySet) and errors say where the bad value came from. Flags the
// command line set, and aliases, are not in it, so that ff cannot
// override the one or read the other from the environment.
func fillFromEnvAndFile(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	src := &fillSource{}
	if f := fs.Lookup(ConfigFlag); f != nil && isConfig(f) {
		src.config = f.Value.(*configValue)
	}
	shadow := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shadow.SetOutput(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		if !given[f.Name] && !commandLineOnly(f) {
			shadow.Var(&filler{fs: fs, name: f.Name, src: src}, f.Name, f.Usage)
		}
	})
	opts := []ff.Option{ff.WithEnvVarPrefix(strings.TrimSuffix(EnvPrefix, "_"))}
	if src.config != nil {
		opts = append(opts,
			ff.WithConfigFileVia(&src.config.path),
			ff.WithConfigFileParser(configParser(fs, given, src)))
	}
	err := ff.Parse(shadow, nil, opts...)
	var fe *fillError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fe
	case src.config == nil:
		return err
	}
	// Opening or reading the file failed.
	var pe *iofs.PathError
	if errors.As(err, &pe) && pe.Path == src.config.path {
		err = pe.Err
	}
	return fmt.Errorf("--%s %s: %w", ConfigFlag, src.config.path, oneLine{err})
}

// oneLine is an error whose message is put on one line: the YAML
// decoder's span several.
type oneLine struct{ err error }

func (e oneLine) Error() string { return strings.Join(strings.Fields(e.err.Error()), " ") }
func (e oneLine) Unwrap() error { return e.err }

// fillSource is where ff is reading values from: the environment until
// it starts on the config file.
type fillSource struct {
	config *configValue // nil: the command takes no config file
	file   bool
}

// filler is a flag of ff's flag set: it sets the flag of the command's.
type filler struct {
	fs   *flag.FlagSet
	name string
	src  *fillSource
}

func (v *filler) String() string {
	if v == nil || v.fs == nil {
		return ""
	}
	return v.fs.Lookup(v.name).Value.String()
}

func (v *filler) Set(s string) error {
	if err := v.fs.Set(v.name, s); err != nil {
		if v.src.file {
			return &fillError{fmt.Errorf("--%s %s: %s: invalid value %q: %w", ConfigFlag, v.src.config.path, v.name, s, err)}
		}
		return &fillError{fmt.Errorf("invalid %s=%q: %w", envName(v.name), s, err)}
	}
	return nil
}

// fillError is a value the environment or the config file holds that its
// flag refuses; ff's wrapping of it is dropped.
type fillError struct{ err error }

func (e *fillError) Error() string { return e.err.Error() }
func (e *fillError) Unwrap() error { return e.err }

// configParser returns ff's parser of the config file: ffyaml reads the
// YAML; this checks every key names a flag the file may set, joins list
// values, and passes on the flags the command line did not set (ff skips
// those the environment set).
func configParser(fs *flag.FlagSet, given map[string]bool, src *fillSource) ff.ConfigFileParser {
	return func(r io.Reader, set func(name, value string) error) error {
		src.file = true
		values := map[string][]string{}
		if err := ffyaml.Parser(r, func(name, value string) error {
			values[name] = append(values[name], value)
			return nil
		}); err != nil {
			var pe ffyaml.ParseError
			if errors.As(err, &pe) {
				return pe.Inner
			}
			return err
		}
		keys := slices.Sorted(maps.Keys(values))
		var unknown []string
		for _, key := range keys {
			f := fs.Lookup(key)
			switch {
			case f != nil && commandLineOnly(f):
				a := f.Value.(*Alias)
				return fmt.Errorf("key %q: --%s is a deprecated command-line spelling; the file takes %s:", key, key, a.target)
			case f == nil || isConfig(f):
				unknown = append(unknown, fmt.Sprintf("%q", key))
			}
		}
		if len(unknown) > 0 {
			what := "unknown key"
			if len(unknown) > 1 {
				what += "s"
			}
			return fmt.Errorf("%s %s: the keys are the names of the flags of %s (see --help), at the top level", what, strings.Join(unknown, ", "), fs.Name())
		}
		for _, key := range keys {
			if given[key] {
				continue
			}
			v := values[key]
			if _, list := fs.Lookup(key).Value.(*listValue); len(v) > 1 && !list {
				return fmt.Errorf("%s: a list of %d values; --%s takes one", key, len(v), key)
			}
			if err := set(key, strings.Join(v, ",")); err != nil {
				return err
			}
		}
		return nil
	}
}

// ParseCommandFlags parses the flags of the command cmd (a flag set of
// NewFlagSet) from args, the environment and the config file (with
// AddConfigFlag), allowing flags before and after positional arguments,
// and returns the positional arguments. Every command of both binaries
// parses its flags with it.
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
// line, through its environment variable or in the config file, as
// opposed to left at its default.
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
