package main

import "testing"

// nodeSet is three serve instances that can be stopped and started again
// on their data directories (the MQTT session tests' name for
// serveCluster).
type nodeSet = serveCluster

func newNodeSet(t *testing.T) *nodeSet { return startServeNodes(t, 3) }
