// Package kubernetes holds ordinal's Kubernetes manifests: a StatefulSet
// of three nodes with a volume each, the headless Service that gives the
// pods their stable peer names, the client Service, a PodDisruptionBudget
// and a NetworkPolicy, put together by kustomization.yaml. It has no Go
// code of its own: manifests_test.go decodes every manifest into the
// Kubernetes API types, strictly, and checks offline that the objects fit
// together and that every flag they give ordinal serve exists. See
// ../README.md, "Kubernetes".
package kubernetes
