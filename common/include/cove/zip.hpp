#pragma once
// Deterministic zip archives of a directory (results, dataset directories).
//
// Writer: "stored" entries (no compression), regular files only (recursive;
// directories are not stored), entry name = path relative to the directory
// with '/' separators, entries sorted by name (byte order), every timestamp
// 1980-01-01 00:00 (the DOS epoch: zip cannot store Unix time 0), Unix mode
// bits in the external attributes, no extra fields. The same directory
// content always gives the same bytes. A symlink whose target resolves
// inside the directory is stored as a regular file with the target's bytes
// (symlinks to directories are not followed); a symlink that escapes the
// directory is an error. Sockets, FIFOs and devices are skipped.
// No zip64: each file and the archive must stay below 4 GiB and 65535
// entries (errc::too_large otherwise).
//
// Reader: a minimal one for stored entries only (tests, the CLI). It rejects
// other methods, absolute names, "..", '\\', overlapping entries and CRC
// mismatches.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "cove/expected.hpp"

namespace cove {

/// CRC-32 (ISO-HDLC, as zip uses); pass the previous value to continue.
uint32_t crc32(std::span<const uint8_t> data, uint32_t crc = 0) noexcept;

/// The archive in memory.
expected<std::vector<uint8_t>> zip_directory(const std::filesystem::path& dir);

/// The same bytes streamed to `out` (created or truncated; files are copied
/// in chunks, so memory use does not grow with file size).
expected<void> zip_directory_to_file(const std::filesystem::path& dir, const std::filesystem::path& out);

struct zip_entry {
  std::string name;  // relative, '/'-separated
  uint64_t size = 0;
  uint32_t crc = 0;
  uint32_t mode = 0;  // Unix st_mode bits from the external attributes (0 if not Unix)
};

/// Lists the entries in central directory order (checks structure, not CRCs).
expected<std::vector<zip_entry>> list_zip(std::span<const uint8_t> zip);
expected<std::vector<zip_entry>> list_zip(const std::filesystem::path& zip);

/// Extracts every entry under `dest` (created if missing). Refuses to
/// overwrite existing files or to follow symlinks; checks every CRC before
/// writing the entry. Permission bits are kept (masked to 0755/0644-style
/// rwx bits, no setuid). On error, files extracted so far stay.
expected<void> extract_zip(std::span<const uint8_t> zip, const std::filesystem::path& dest);
expected<void> extract_zip(const std::filesystem::path& zip, const std::filesystem::path& dest);

}  // namespace cove
