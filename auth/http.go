package auth

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
)

// RequireAdminHTTP wraps h (the pprof handlers) so that only admins reach
// it: a request with an admin bearer token in its Authorization header, or
// with a client certificate the TLS handshake verified (r.TLS) whose name
// is an admin name, or both. A request without credentials, or with a
// malformed or unknown token, gets 401 with a WWW-Authenticate: Bearer
// header; a known caller without RoleAdmin gets 403. The request's context
// carries the Identity. In open mode every request passes, with an
// Identity whose Via is ViaOpen.
func (a *Authorizer) RequireAdminHTTP(h http.Handler) http.Handler {
	if a.open {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, openIdentity)))
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.identify(verifiedLeaf(r.TLS), r.Header.Values("Authorization"))
		what := "the debug endpoint " + r.URL.Path
		switch {
		case err == nil && id == nil:
			err = &callError{
				kind: ErrNoCredentials,
				code: codes.Unauthenticated,
				msg:  what + " needs role admin: send an admin bearer token (Authorization: Bearer <token>) or a client certificate with a name in the node's --admin-names",
			}
		case err == nil && !id.Roles.Has(RoleAdmin):
			err = errDenied(id, what, RoleAdmin)
		}
		if err != nil {
			code := http.StatusUnauthorized
			if errors.Is(err, ErrPermissionDenied) {
				code = http.StatusForbidden
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="ordinal"`)
			}
			http.Error(w, err.Error(), code)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}
