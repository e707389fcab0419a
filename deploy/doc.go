// Package deploy holds the deployment files (compose.yaml, kubernetes/) and
// their tests, which load them offline the way Docker Compose and kustomize
// do and check them against the executor's own configuration.
package deploy
