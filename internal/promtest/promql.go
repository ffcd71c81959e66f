package promtest

import (
	"fmt"
	"strings"
)

// Selector is a vector selector of a PromQL expression: a metric name and
// the raw text of its label matchers, without the braces ("" when it has
// none).
type Selector struct {
	Name     string
	Matchers string
}

// keywords are PromQL words that are neither metric nor function names.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true, "atan2": true,
}

// labelLists are the keywords followed by a parenthesized list of label
// names, which are not metric names.
var labelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// Selectors returns the vector selectors of expr in order: every name that
// is not a function, an aggregation, a keyword, a label name of a by, on
// or similar list, or inside a string, a label matcher or a range. A
// selector of matchers only ({__name__="x"}) comes back with an empty
// Name. Grafana's variables ($job, $__rate_interval) may appear wherever
// they do in dashboards: inside strings and ranges. It is a scanner, not
// a parser: it does not check that expr is valid PromQL (Prometheus does,
// when the expression is queried).
func Selectors(expr string) ([]Selector, error) {
	var out []Selector
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r') {
			j++
		}
		return j
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '{':
			end, err := closing(s, i, '{', '}')
			if err != nil {
				return nil, err
			}
			out = append(out, Selector{Matchers: s[i+1 : end-1]})
			i = end
		case c == '[':
			end, err := closing(s, i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '$': // a Grafana variable outside a string or range
			i++
			for i < len(s) && isIdent(s[i], false) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			// A number or duration: digits, letters (1e3, 5m, 0x1f), dots.
			for i < len(s) && (isIdent(s[i], false) || s[i] == '.') {
				i++
			}
		case isIdent(c, true):
			start := i
			for i < len(s) && isIdent(s[i], false) {
				i++
			}
			word := s[start:i]
			next := skipSpace(i)
			lower := strings.ToLower(word)
			switch {
			case labelLists[lower] && next < len(s) && s[next] == '(':
				end, err := closing(s, next, '(', ')')
				if err != nil {
					return nil, err
				}
				i = end
			case keywords[lower]:
				if lower == "offset" {
					// The duration that follows is skipped as a number.
					i = skipSpace(i)
					if i < len(s) && s[i] == '-' {
						i++
					}
				}
			case next < len(s) && s[next] == '(':
				// A function or aggregation: its arguments follow.
			case followedByGrouping(s, next):
				// An aggregation with its grouping first: sum by (le) (...).
			default:
				sel := Selector{Name: word}
				if next < len(s) && s[next] == '{' {
					end, err := closing(s, next, '{', '}')
					if err != nil {
						return nil, err
					}
					sel.Matchers = s[next+1 : end-1]
					i = end
				}
				out = append(out, sel)
			}
		default:
			i++
		}
	}
	return out, nil
}

// MetricNames returns the distinct metric names expr selects, in order of
// first appearance.
func MetricNames(expr string) ([]string, error) {
	sels, err := Selectors(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var names []string
	for _, s := range sels {
		if s.Name != "" && !seen[s.Name] {
			seen[s.Name] = true
			names = append(names, s.Name)
		}
	}
	return names, nil
}

// followedByGrouping reports whether s[i:] starts with by or without and
// a parenthesized list.
func followedByGrouping(s string, i int) bool {
	j := i
	for j < len(s) && isIdent(s[j], false) {
		j++
	}
	w := strings.ToLower(s[i:j])
	if w != "by" && w != "without" {
		return false
	}
	for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r') {
		j++
	}
	return j < len(s) && s[j] == '('
}

func isIdent(c byte, first bool) bool {
	if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
		return true
	}
	return !first && c >= '0' && c <= '9'
}

// skipString returns the index just past the string literal starting at
// s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d of %q", i, s)
}

// closing returns the index just past the bracket that closes the one at
// s[i], skipping strings and nested brackets of the same kind.
func closing(s string, i int, open, close byte) (int, error) {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := skipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced %c at offset %d of %q", open, i, s)
}
