// Package deploy holds ordinal's container deployment: a FROM-scratch
// Dockerfile, a three-node docker-compose.yml and, in compose_test.go, the
// end-to-end test of both. It has no Go code of its own; see README.md.
package deploy
