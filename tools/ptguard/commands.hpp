// The subcommands of the ptguard tool.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace ptguard::tools {

void add_demo_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_decode_command(CLI::App& app);
void add_dump_command(CLI::App& app);
void add_translate_command(CLI::App& app);
void add_map_command(CLI::App& app);
void add_export_command(CLI::App& app);

/// The process exit code set by the command that ran: 0 ok, 1 an expectation or check failed,
/// 2 bad usage or bad input.
int exit_code();
void set_exit_code(int code);

/// Runs the demo (what `make demo` runs), writing the ownership map's SVG to `svg_path`.
/// Returns the exit code.
int run_demo(const std::string& svg_path, bool trace);

}  // namespace ptguard::tools
