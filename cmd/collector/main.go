// Command collector is a placeholder until its issue lands.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "collector: not yet implemented")
	os.Exit(2)
}
