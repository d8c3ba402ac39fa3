#pragma once
// compare --plot: perplexity (± stderr) against bits per weight as one self-contained SVG file,
// one labelled point per scheme, the reference scheme marked. Hand-written XML: no dependency.
#include <string>
#include <vector>

#include "pipeline/compare.h"

namespace sf::cli {

// Each scheme is a <circle class="point" data-scheme="NAME" data-bits-per-weight=... data-ppl=...>
// with a <text class="label" data-label-for="NAME"> beside it; the first row is the reference.
// `caption` is the title line (the source, the text, the window length).
std::string compare_plot_svg(const std::vector<CompareRow>& rows, const std::string& caption);

}  // namespace sf::cli
