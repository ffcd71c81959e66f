// Package deploy holds ordinal's container deployment: a FROM-scratch
// Dockerfile, a three-node docker-compose.yml and the etcd-backed
// docker-compose.etcd.yml, both with TLS and authorization on (their certs
// service runs `ordinal tls init` before the nodes start), the compose
// file's monitoring profile (Prometheus with the rules of prometheus/,
// Dockerfile.prometheus to package Debian's) and grafana profile (the
// dashboard of grafana/), and, in compose_test.go,
// compose_monitoring_test.go and compose_etcd_test.go, the end-to-end
// tests of them. It has no Go code of its own; see README.md.
package deploy
