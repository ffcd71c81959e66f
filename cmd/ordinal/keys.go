package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ordinal-dev/ordinal/api/ordinalv1"
	"github.com/ordinal-dev/ordinal/internal/cli"
)

const keysUsage = `ordinal keys list [--addr HOST:PORT] [--store S] [--prefix P] [--page-size N] [--all | --page-token T]`

func runKeys(args []string) error {
	if len(args) > 0 && args[0] == "list" {
		return runKeysList(args[1:])
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintf(os.Stderr, "Usage: %s\n\nLists keys with their high-water marks; see ordinal keys list --help.\n", keysUsage)
		return cli.ErrHelp
	}
	if len(args) == 0 {
		return cli.UsageErrorf("keys: expected a subcommand: %s", keysUsage)
	}
	return cli.UsageErrorf("keys: unknown subcommand %q: %s", args[0], keysUsage)
}

// keysListFlags are the flags of ordinal keys list.
type keysListFlags struct {
	admin         adminFlags
	store, prefix string
	pageSize      uint
	pageToken     string
	all           bool
}

func runKeysList(args []string) error {
	var f keysListFlags
	fs := cli.NewFlagSet("keys list", keysUsage+`

Lists keys with their high-water marks (the largest ID handed out or
reserved, or the floor set), sorted by store and then key, as the node at
--addr applied them: a follower's marks may trail the leader's by the
entries it has not applied yet. One page by default, every page with
--all. Columns are separated by white space; a name that is empty or holds
white space, quotes or unprintable bytes is printed as a quoted Go string
with spaces as \x20.
The last line gives the number of keys the node holds in all and, when
more follow, the --page-token that lists the next page.`)
	f.admin.conn.registerAddr(fs, "gRPC address of the node whose keys to list")
	f.admin.conn.Register(fs)
	fs.DurationVar(&f.admin.timeout, "timeout", 10*time.Second, "how long to wait for each page")
	fs.StringVar(&f.store, "store", "", "list only this store's keys; default every store")
	fs.StringVar(&f.prefix, "prefix", "", "list only keys that start with this")
	fs.UintVar(&f.pageSize, "page-size", 1000, "keys per request, at most 10000")
	fs.StringVar(&f.pageToken, "page-token", "", "continue a listing where the --page-token of its last line says")
	fs.BoolVar(&f.all, "all", false, "list every page, not just the first")
	if err := cli.NoArgs("keys list", fs, args); err != nil {
		return err
	}
	switch {
	case f.pageSize == 0 || f.pageSize > 10000:
		return cli.UsageErrorf("keys list: --page-size %d: use 1 to 10000", f.pageSize)
	case f.all && f.pageToken != "":
		return cli.UsageErrorf("keys list: --all lists from the start; drop --page-token, or --all to list one page")
	}
	conn, err := f.admin.conn.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	c := ordinalv1.NewClusterServiceClient(conn)
	req := &ordinalv1.KeysRequest{StoreName: f.store, Prefix: f.prefix, PageSize: uint32(f.pageSize), PageToken: f.pageToken}
	var t keysTable
	for {
		// A timeout per page: listing millions of keys with --all takes
		// many pages, each of which must be quick.
		ctx, cancel := context.WithTimeout(context.Background(), f.admin.timeout)
		resp, err := c.Keys(ctx, req)
		cancel()
		if err != nil {
			return f.admin.conn.rpcError(err)
		}
		t.page(os.Stdout, resp)
		next := resp.GetNextPageToken()
		if next == "" || !f.all {
			t.footer(os.Stdout, resp.GetTotal(), next)
			return nil
		}
		req.PageToken = next
	}
}

// keysTable prints pages of keys as one table: a column is as wide as its
// widest cell so far (fmt pads to runes), so it only widens from one page to the next, and
// a page is printed as soon as it arrives.
type keysTable struct {
	width  [2]int // of the store and key columns
	listed int
}

var keysHeader = [3]string{"STORE", "KEY", "HIGH-WATER"}

func (t *keysTable) page(out io.Writer, resp *ordinalv1.KeysResponse) {
	rows := make([][3]string, len(resp.GetKeys()))
	for i, k := range resp.GetKeys() {
		rows[i] = [3]string{fieldName(k.GetStoreName()), fieldName(k.GetKey()), strconv.FormatInt(k.GetHighWater(), 10)}
	}
	if t.listed == 0 {
		rows = append([][3]string{keysHeader}, rows...)
	}
	for _, r := range rows {
		t.width[0], t.width[1] = max(t.width[0], utf8.RuneCountInString(r[0])), max(t.width[1], utf8.RuneCountInString(r[1]))
	}
	w := bufio.NewWriter(out)
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %-*s  %s\n", t.width[0], r[0], t.width[1], r[1], r[2])
	}
	w.Flush()
	t.listed += len(resp.GetKeys())
}

func (t *keysTable) footer(out io.Writer, total uint64, next string) {
	fmt.Fprintf(out, "listed %d of the %d keys the node holds", t.listed, total)
	if next != "" {
		fmt.Fprintf(out, "; more follow: --page-token %s", next)
	}
	fmt.Fprintln(out)
}

// fieldName prints a store or key name as one white-space-free column:
// as it is when it is printable and holds no space or quote, else as a
// quoted Go string with spaces written \x20 ("" for an empty name), which
// strconv.Unquote reads back.
func fieldName(s string) string {
	if s == "" || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '\'' || r == '`' || r == unicode.ReplacementChar
	}) >= 0 {
		return strings.ReplaceAll(strconv.Quote(s), " ", `\x20`)
	}
	return s
}
