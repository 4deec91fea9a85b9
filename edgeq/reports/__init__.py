"""Reports: report.json assembly and the terminal summary, the self-contained HTML
pages (evaluate, per output, measurements, history) with inline SVG, soak JUnit."""
