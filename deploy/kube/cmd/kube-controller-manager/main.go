// Command opswarm-kube-controller-manager is the upstream kube-controller-manager, unchanged: a copy of
// k8s.io/kubernetes' cmd/kube-controller-manager/controller-manager.go, built from the published module (see
// ../../go.mod). The local stack runs only the deployment and replicaset controllers, so that Deployments get
// ReplicaSets and revision annotations (and `rollout undo` has something to roll back to).
package main

import (
	"os"
	_ "time/tzdata" // for CronJob Time Zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugin
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	command := app.NewControllerManagerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
