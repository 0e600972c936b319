// Command gen generates protocols/amqp/wire/spec_gen.go from RabbitMQ's
// machine-readable AMQP 0-9-1 specification.
//
// It is run by the go:generate directive in wire/doc.go:
//
//	go run ./internal/gen -spec spec/amqp-rabbitmq-0.9.1.json -out spec_gen.go
//
// With -out "-" the code is written to standard output.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bourse-mq/bourse/protocols/amqp/wire/internal/gen/specgen"
)

func main() {
	specPath := flag.String("spec", "spec/amqp-rabbitmq-0.9.1.json", "path of the JSON specification")
	out := flag.String("out", "spec_gen.go", `output file, or "-" for standard output`)
	flag.Parse()

	if err := run(*specPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(specPath, out string) error {
	src, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	// Record the spec path with forward slashes so the output does not
	// depend on the platform that ran the generator.
	code, err := specgen.Generate(src, filepath.ToSlash(specPath))
	if err != nil {
		return err
	}
	if out == "-" {
		_, err = os.Stdout.Write(code)
		return err
	}
	return os.WriteFile(out, code, 0o644)
}
