// The subcommands of the ptguard tool.
#pragma once

#include <CLI/CLI.hpp>

namespace ptguard::tools {

void add_demo_command(CLI::App& app);
void add_decode_command(CLI::App& app);

/// The process exit code set by the command that ran (0 unless it failed).
int exit_code();
void set_exit_code(int code);

}  // namespace ptguard::tools
