// Package auth decides who may call which method on ordinal's client gRPC
// port, and on the admin-only HTTP debug endpoints.
//
// A caller is identified by a client certificate the TLS handshake verified,
// by a bearer token listed (hashed) in a tokens file, by both, or by nothing.
// Each method needs a role (MethodRole): RoleIDs for taking IDs and health
// checks, RoleAdmin for everything that changes the cluster or a key's
// floor, and RoleAdmin for any method the table does not know. An
// Authorizer applies that policy in gRPC interceptors; see DESIGN.md for
// the model and its trade-offs.
package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Role is a permission a caller holds and a method needs.
type Role string

const (
	// RoleIDs may take IDs (GetNextId, GetNextIds, NextIdStream, Layotto's
	// Runtime), read high-water marks, and call health and reflection.
	RoleIDs Role = "ids"
	// RoleAdmin may do everything RoleIDs may, and change the cluster
	// (Join, Remove, TransferLeadership), read its membership, and raise a
	// key's floor. Any method MethodRole does not know needs RoleAdmin.
	RoleAdmin Role = "admin"
	// RolePeer is held by other nodes of the cluster. It is granted only on
	// the peer port, by the peer transport; this package never grants it,
	// and a tokens file line that names it is rejected.
	RolePeer Role = "peer"
)

// RoleSet is a set of roles, one bit each; the zero value is the empty set.
// Granting RoleAdmin also grants RoleIDs, so a set holding RoleAdmin always
// holds RoleIDs too.
type RoleSet uint8

const (
	bitIDs RoleSet = 1 << iota
	bitAdmin
	bitPeer
)

// bit returns the bit of r, or 0 for a role this package does not know.
func bit(r Role) RoleSet {
	switch r {
	case RoleIDs:
		return bitIDs
	case RoleAdmin:
		return bitAdmin
	case RolePeer:
		return bitPeer
	}
	return 0
}

// grant returns the set a caller granted r holds, with the roles r implies.
func grant(r Role) RoleSet {
	if r == RoleAdmin {
		return bitAdmin | bitIDs
	}
	return bit(r)
}

// Has reports whether s holds r. It is false for a role this package does
// not know.
func (s RoleSet) Has(r Role) bool {
	b := bit(r)
	return b != 0 && s&b == b
}

// Roles returns the roles in s, strongest first.
func (s RoleSet) Roles() []Role {
	var out []Role
	for _, r := range []Role{RolePeer, RoleAdmin, RoleIDs} {
		if s.Has(r) {
			out = append(out, r)
		}
	}
	return out
}

// String names the strongest roles in s, leaving out the ones they imply:
// "admin" for admin (and so ids), "ids", "peer+ids", or "none".
func (s RoleSet) String() string {
	if s.Has(RoleAdmin) {
		s &^= bitIDs
	}
	var names []string
	for _, r := range s.Roles() {
		names = append(names, string(r))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "+")
}

// methodRoles is the role each known client-port method needs.
var methodRoles = map[string]Role{
	"/ordinal.v1.SequencerService/GetNextId":    RoleIDs,
	"/ordinal.v1.SequencerService/GetNextIds":   RoleIDs,
	"/ordinal.v1.SequencerService/GetHighWater": RoleIDs,
	"/ordinal.v1.SequencerService/NextIdStream": RoleIDs,
	"/ordinal.v1.SnowflakeService/DecodeId":     RoleIDs,

	"/ordinal.v1.SequencerService/SetFloor":         RoleAdmin,
	"/ordinal.v1.ClusterService/Join":               RoleAdmin,
	"/ordinal.v1.ClusterService/Remove":             RoleAdmin,
	"/ordinal.v1.ClusterService/Members":            RoleAdmin,
	"/ordinal.v1.ClusterService/Leader":             RoleAdmin,
	"/ordinal.v1.ClusterService/TransferLeadership": RoleAdmin,
}

// serviceRoles is the role every method of a service needs, keyed by
// "/<service>/", for services whose methods all need the same role.
var serviceRoles = map[string]Role{
	// Layotto's Runtime: ordinal implements only GetNextId; grpc-go answers
	// the others Unimplemented, which tells an ids caller nothing more.
	"/spec.proto.runtime.v1.Runtime/":            RoleIDs,
	"/grpc.health.v1.Health/":                    RoleIDs,
	"/grpc.reflection.v1.ServerReflection/":      RoleIDs,
	"/grpc.reflection.v1alpha.ServerReflection/": RoleIDs,
}

// MethodRole returns the role a client-port method needs, given its full
// name ("/package.Service/Method"). Methods it does not know need
// RoleAdmin: a method added to the API without a decision is refused to
// ids callers rather than opened to them.
func MethodRole(fullMethod string) Role {
	if r, ok := methodRoles[fullMethod]; ok {
		return r
	}
	if i := strings.LastIndexByte(fullMethod, '/'); i > 0 {
		if r, ok := serviceRoles[fullMethod[:i+1]]; ok {
			return r
		}
	}
	return RoleAdmin
}

// DefaultReloadInterval is how often, at most, an Authorizer checks whether
// its tokens file changed when Config.ReloadInterval is zero.
const DefaultReloadInterval = time.Second

// Config configures an Authorizer.
type Config struct {
	// Open turns every check off: every call is allowed with an Identity
	// whose Via is ViaOpen. It is the development mode of a node started
	// without any security; it cannot be combined with TokensFile or
	// AdminNames, which would be silently ignored.
	Open bool
	// AnonymousIDs allows calls that need only RoleIDs without any
	// credentials, because Layotto's SDKs cannot send any. Calls that carry
	// credentials are still checked, and a wrong one is refused.
	AnonymousIDs bool
	// AdminNames are the client certificate names (CommonName, DNS, email
	// or URI SAN) granted RoleAdmin. Any other verified certificate gets
	// RoleIDs.
	AdminNames []string
	// TokensFile is the path of the tokens file, one "<role> <name>
	// sha256:<hex>" per line; "" accepts no bearer tokens.
	TokensFile string
	// ReloadInterval is how often, at most, the tokens file is checked for
	// changes (DefaultReloadInterval when zero). A removed token stops
	// working within it.
	ReloadInterval time.Duration
	// Logger receives reloads of the tokens file and its errors; never a
	// token or a hash. Nil discards them.
	Logger hclog.Logger
}

// The values of Identity.Via.
const (
	// ViaCertificate: a client certificate the TLS handshake verified.
	ViaCertificate = "certificate"
	// ViaToken: a bearer token from the tokens file.
	ViaToken = "token"
	// ViaCertificateAndToken: both; the caller holds the union of their
	// roles and its Name is "<certificate name>+<token name>".
	ViaCertificateAndToken = "certificate+token"
	// ViaAnonymous: no credentials, allowed by Config.AnonymousIDs.
	ViaAnonymous = "anonymous"
	// ViaOpen: nothing was checked (Config.Open).
	ViaOpen = "open"
)

// Identity is who made a call, as the Authorizer established it.
type Identity struct {
	// Name is the certificate's name (its CommonName, else its first SAN)
	// or the token's name from the tokens file; "" for anonymous and open
	// calls.
	Name string
	// Roles are the roles the caller holds.
	Roles RoleSet
	// Via says how the caller was identified: one of the Via constants.
	Via string
}

// String describes the identity for messages and logs, e.g. "alice (role
// ids)".
func (id Identity) String() string {
	name := id.Name
	if name == "" {
		name = id.Via
	}
	return fmt.Sprintf("%s (role %s)", name, id.Roles)
}

// identityKey is the context key of the *Identity Authorize attaches.
type identityKey struct{}

// IdentityFromContext returns the Identity the Authorizer attached to a
// call's context, and false when the call did not pass through one.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	if !ok || id == nil {
		return Identity{}, false
	}
	return *id, true
}

// The identities shared by every call of their kind; never modified.
var (
	openIdentity      = &Identity{Roles: grant(RoleAdmin), Via: ViaOpen}
	anonymousIdentity = &Identity{Roles: grant(RoleIDs), Via: ViaAnonymous}
)

var (
	// ErrNoCredentials is wrapped by the error of a call that carried no
	// credentials while its method needs some. Its gRPC code is
	// Unauthenticated.
	ErrNoCredentials = errors.New("no credentials")
	// ErrBadCredentials is wrapped by the error of a call whose credentials
	// are wrong: a malformed authorization header or an unknown (mistyped,
	// tampered or revoked) token. Its gRPC code is Unauthenticated. A wrong
	// credential is refused even when another one would have sufficed.
	ErrBadCredentials = errors.New("invalid credentials")
	// ErrPermissionDenied is wrapped by the error of a call whose caller is
	// known but lacks the role its method needs. Its gRPC code is
	// PermissionDenied.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidConfig is wrapped by New's error for a Config it refuses.
	ErrInvalidConfig = errors.New("invalid auth configuration")
)

// callError is a refused call: its message is for the caller, its gRPC
// code is what status.Code reports, and it wraps one of ErrNoCredentials,
// ErrBadCredentials and ErrPermissionDenied.
type callError struct {
	kind error
	code codes.Code
	msg  string
}

func (e *callError) Error() string { return e.msg }

func (e *callError) Unwrap() error { return e.kind }

// GRPCStatus lets grpc-go and status.FromError report e with its code.
func (e *callError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// credentialsHint says what a caller without credentials could send.
const credentialsHint = "this call needs credentials: a client certificate or a bearer token (ordinal CLI: --token-file)"

func errNoCredentials(what string, need Role) error {
	return &callError{
		kind: ErrNoCredentials,
		code: codes.Unauthenticated,
		msg:  fmt.Sprintf("%s; %s needs role %s", credentialsHint, what, need),
	}
}

func errBadCredentials(msg string) error {
	return &callError{kind: ErrBadCredentials, code: codes.Unauthenticated, msg: msg}
}

func errDenied(id *Identity, what string, need Role) error {
	msg := fmt.Sprintf("%s may not call %s: it needs role %s", id, what, need)
	if need == RoleAdmin {
		msg += " (an admin bearer token, or a client certificate with a name in the node's --admin-names)"
	}
	return &callError{kind: ErrPermissionDenied, code: codes.PermissionDenied, msg: msg}
}

// Authorizer decides whether a call may proceed and who made it. It is
// safe for concurrent use; build it with New.
type Authorizer struct {
	open         bool
	anonymousIDs bool
	adminNames   map[string]struct{}
	tokens       *tokenSource // nil when no tokens file is configured
	logger       hclog.Logger
}

// New returns an Authorizer for cfg. When cfg.TokensFile is set it reads
// the file now, and fails, wrapping ErrInvalidTokensFile, if the file
// cannot be read or a line is invalid (the error gives the line and why,
// never its token hash). A Config it refuses gives an error wrapping
// ErrInvalidConfig.
func New(cfg Config) (*Authorizer, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.Open && (cfg.TokensFile != "" || len(cfg.AdminNames) > 0) {
		return nil, fmt.Errorf("%w: open mode checks nothing, so it cannot be combined with a tokens file or admin names; drop one or the other", ErrInvalidConfig)
	}
	if cfg.ReloadInterval < 0 {
		return nil, fmt.Errorf("%w: negative tokens file reload interval %v", ErrInvalidConfig, cfg.ReloadInterval)
	}
	interval := cfg.ReloadInterval
	if interval == 0 {
		interval = DefaultReloadInterval
	}
	a := &Authorizer{
		open:         cfg.Open,
		anonymousIDs: cfg.AnonymousIDs,
		adminNames:   make(map[string]struct{}, len(cfg.AdminNames)),
		logger:       logger,
	}
	for _, name := range cfg.AdminNames {
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("%w: empty admin name", ErrInvalidConfig)
		}
		a.adminNames[name] = struct{}{}
	}
	if cfg.TokensFile != "" {
		src, err := newTokenSource(cfg.TokensFile, interval, logger)
		if err != nil {
			return nil, err
		}
		a.tokens = src
	}
	return a, nil
}

// Authorize decides whether the caller in ctx may call fullMethod
// ("/package.Service/Method"), and returns ctx carrying its Identity
// (IdentityFromContext). The error, when the call is refused, carries its
// gRPC code (status.Code) and wraps ErrNoCredentials, ErrBadCredentials or
// ErrPermissionDenied.
func (a *Authorizer) Authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if a.open {
		return context.WithValue(ctx, identityKey{}, openIdentity), nil
	}
	need := MethodRole(fullMethod)
	id, err := a.identify(leafFromContext(ctx), metadata.ValueFromIncomingContext(ctx, "authorization"))
	if err != nil {
		return nil, err
	}
	if id == nil {
		if need == RoleIDs && a.anonymousIDs {
			return context.WithValue(ctx, identityKey{}, anonymousIdentity), nil
		}
		return nil, errNoCredentials(fullMethod, need)
	}
	if !id.Roles.Has(need) {
		return nil, errDenied(id, fullMethod, need)
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// identify returns who presented leaf (a verified client certificate, or
// nil) and the authorization header values authz: nil when there are no
// credentials at all, an error when a token is malformed or unknown.
func (a *Authorizer) identify(leaf *x509.Certificate, authz []string) (*Identity, error) {
	var cert *Identity
	if leaf != nil {
		cert = a.certIdentity(leaf)
	}
	if len(authz) == 0 {
		return cert, nil
	}
	tok, err := a.tokenIdentity(authz)
	if err != nil {
		return nil, err
	}
	if cert == nil {
		return tok, nil
	}
	return &Identity{
		Name:  cert.Name + "+" + tok.Name,
		Roles: cert.Roles | tok.Roles,
		Via:   ViaCertificateAndToken,
	}, nil
}

// certIdentity returns the identity of a verified client certificate:
// RoleAdmin when one of its names is an admin name, RoleIDs otherwise.
func (a *Authorizer) certIdentity(leaf *x509.Certificate) *Identity {
	roles := grant(RoleIDs)
	if a.isAdmin(leaf) {
		roles = grant(RoleAdmin)
	}
	return &Identity{Name: certName(leaf), Roles: roles, Via: ViaCertificate}
}

// isAdmin reports whether one of leaf's names is an admin name.
func (a *Authorizer) isAdmin(leaf *x509.Certificate) bool {
	if len(a.adminNames) == 0 {
		return false
	}
	has := func(name string) bool {
		_, ok := a.adminNames[name]
		return ok && name != ""
	}
	if has(leaf.Subject.CommonName) {
		return true
	}
	for _, names := range [][]string{leaf.DNSNames, leaf.EmailAddresses} {
		for _, n := range names {
			if has(n) {
				return true
			}
		}
	}
	for _, u := range leaf.URIs {
		if has(u.String()) {
			return true
		}
	}
	return false
}

// certName names a certificate in an Identity: its CommonName, else its
// first SAN, else its serial number.
func certName(leaf *x509.Certificate) string {
	switch {
	case leaf.Subject.CommonName != "":
		return leaf.Subject.CommonName
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	case len(leaf.EmailAddresses) > 0:
		return leaf.EmailAddresses[0]
	case len(leaf.URIs) > 0:
		return leaf.URIs[0].String()
	}
	return "certificate serial " + leaf.SerialNumber.String()
}

// leafFromContext returns the client certificate of the call in ctx when
// the TLS handshake verified its chain, else nil: a certificate the server
// merely received (tls.RequireAnyClientCert) identifies nobody.
func leafFromContext(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	switch info := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		return verifiedLeaf(&info.State)
	case *credentials.TLSInfo:
		return verifiedLeaf(&info.State)
	}
	return nil
}

// verifiedLeaf returns the leaf of the first verified chain in st, or nil.
func verifiedLeaf(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// maxTokenLen bounds the bearer tokens that are hashed at all; NewToken's
// are 48 bytes long.
const maxTokenLen = 512

// tokenIdentity returns the identity of the bearer token in the
// authorization header values, or an ErrBadCredentials error when the
// header is malformed or the token unknown.
func (a *Authorizer) tokenIdentity(authz []string) (*Identity, error) {
	if len(authz) != 1 {
		return nil, errBadCredentials(fmt.Sprintf("the call has %d authorization headers: send exactly one, \"Bearer <token>\"", len(authz)))
	}
	// RFC 7235: the scheme is case-insensitive and followed by one or more
	// spaces. Nothing of the value is echoed: it may be a secret.
	scheme, rest, found := strings.Cut(authz[0], " ")
	if !found {
		if strings.HasPrefix(authz[0], tokenPrefix) {
			return nil, errBadCredentials("malformed authorization header: it holds a bare token; send \"Bearer <token>\"")
		}
		return nil, errBadCredentials("malformed authorization header: want \"Bearer <token>\"")
	}
	if !strings.EqualFold(scheme, "Bearer") {
		return nil, errBadCredentials("unsupported authorization scheme: ordinal accepts only \"Bearer <token>\"")
	}
	token := strings.TrimSpace(rest)
	if token == "" || len(token) > maxTokenLen || hasSpaceOrControl(token) {
		return nil, errBadCredentials("malformed bearer token: want \"Bearer <token>\" with one token of printable characters")
	}
	if a.tokens == nil {
		return nil, errBadCredentials("this node accepts no bearer tokens (it has no tokens file); use a client certificate, or drop the token for calls anonymous callers may make")
	}
	id := a.tokens.lookup(token)
	if id == nil {
		return nil, errBadCredentials("unknown bearer token: it is mistyped, revoked, or not in this cluster's tokens file")
	}
	return id, nil
}

// hasSpaceOrControl reports whether s has an ASCII space or control
// character, which no token has.
func hasSpaceOrControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// authFunc is the go-grpc-middleware AuthFunc: it authorizes the method
// grpc-go recorded in ctx.
func (a *Authorizer) authFunc(ctx context.Context) (context.Context, error) {
	method, ok := grpc.Method(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "auth: the call's context names no gRPC method; the interceptor must run inside a grpc.Server")
	}
	return a.Authorize(ctx, method)
}

// noOverride stands in for the service implementation when the middleware
// looks for grpcauth.ServiceAuthFuncOverride: the policy is MethodRole's
// table alone, so no service can opt itself out of it by defining
// AuthFuncOverride.
type noOverride struct{}

// UnaryInterceptor returns the interceptor that authorizes unary calls;
// install it first (grpc.ChainUnaryInterceptor) so nothing runs before it.
// Handlers find the caller with IdentityFromContext.
func (a *Authorizer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	inner := grpcauth.UnaryServerInterceptor(a.authFunc)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		// The handler closes over the real service; only the copy of info
		// the middleware sees loses it.
		return inner(ctx, req, &grpc.UnaryServerInfo{Server: noOverride{}, FullMethod: info.FullMethod}, handler)
	}
}

// StreamInterceptor returns the interceptor that authorizes streams; the
// handler's stream.Context() carries the Identity.
func (a *Authorizer) StreamInterceptor() grpc.StreamServerInterceptor {
	inner := grpcauth.StreamServerInterceptor(a.authFunc)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return inner(noOverride{}, ss, info, func(_ any, wrapped grpc.ServerStream) error {
			return handler(srv, wrapped)
		})
	}
}
