// Command compose-config loads a Compose file the way `docker compose config`
// does (the same compose-go loader, pinned to the version Docker Compose v5.6.0
// uses) and prints the resolved model, for machines without the Compose plugin.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

// stringList is a repeatable string flag (`--profile a --profile b`).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var files, profiles, envFiles stringList
	flag.Var(&files, "f", "Compose file (repeatable; default: compose.yaml or docker-compose.yml in the working directory)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable)")
	flag.Var(&envFiles, "env-file", "env file for interpolation (repeatable; default: .env beside the Compose file)")
	quiet := flag.Bool("q", false, "only validate, print nothing")
	format := flag.String("format", "yaml", "output format: yaml or json")
	flag.Parse()

	if err := run(files, profiles, envFiles, *quiet, *format); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(files, profiles, envFiles []string, quiet bool, format string) error {
	opts, err := cli.NewProjectOptions(files,
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	if quiet {
		return nil
	}
	var out []byte
	switch format {
	case "json":
		out, err = project.MarshalJSON()
	case "yaml":
		out, err = project.MarshalYAML()
	default:
		return fmt.Errorf("unknown format %q (yaml or json)", format)
	}
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
