//! The bench's SVG: F1 (with its 95 % interval) vs p50 latency with the Pareto front, and per-stage bars.

use std::path::Path;

use super::report::BenchReport;

/// Bottom of the log-scale stage bars (a stage below it shows as no bar).
const BAR_FLOOR_MS: f64 = 0.01;

/// Indices of the strategies no other beats on both latency (lower) and F1 (higher), by latency.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let (li, fi) = points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(lj, fj))| j != i && lj <= li && fj >= fi && (lj < li || fj > fi))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    front
}

/// F1 vs p50 latency (log x) with the Pareto front, and per-stage p50 latency bars, side by side in one SVG.
pub fn write_plot(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let points: Vec<(f64, f64)> = report
            .strategies
            .iter()
            .map(|r| (r.p50_ms.max(0.001), r.f1))
            .collect();
        let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 2.0;
        let hi = points.iter().map(|p| p.0).fold(0.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(&left)
            .caption(
                format!(
                    "F1 (95 % interval) vs p50 latency, {} frames",
                    report.frames
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo.max(0.001)..hi.max(0.01)).log_scale(), 0.0..1.05)?;
        chart
            .configure_mesh()
            .x_desc("p50 latency (ms, log)")
            .y_desc("F1")
            .draw()?;
        let front = pareto_front(&points);
        chart
            .draw_series(LineSeries::new(
                front.iter().map(|&i| points[i]),
                RED.stroke_width(2),
            ))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        // The 95 % interval of each F1 (bootstrap over frames) as a vertical bar.
        chart.draw_series(report.strategies.iter().zip(&points).map(|(r, &(x, _))| {
            PathElement::new(vec![(x, r.ci95.f1[0]), (x, r.ci95.f1[1])], BLACK)
        }))?;
        chart.draw_series(report.strategies.iter().zip(&points).enumerate().map(
            |(i, (r, &p))| {
                let colour = if front.contains(&i) { RED } else { BLUE };
                EmptyElement::at(p)
                    + Circle::new((0, 0), 5, colour.filled())
                    + Text::new(r.strategy.clone(), (8, -12), ("sans-serif", 14))
            },
        ))?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        let stages = ["glance", "focus", "classify"];
        let colours = [GREEN, MAGENTA, CYAN];
        let max_ms = report
            .strategies
            .iter()
            .flat_map(|r| {
                stages
                    .iter()
                    .filter_map(|s| r.stages.get(s).map(|x| x.p50_ms))
            })
            .fold(0.0, f64::max)
            .max(2.0 * BAR_FLOOR_MS)
            * 1.5;
        let n = report.strategies.len();
        let mut bars = ChartBuilder::on(&right)
            .caption("p50 latency per stage (ms, log)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, (BAR_FLOOR_MS..max_ms).log_scale())?;
        let names: Vec<String> = report
            .strategies
            .iter()
            .map(|r| r.strategy.clone())
            .collect();
        bars.configure_mesh()
            .disable_x_mesh()
            // Label positions every half unit; a strategy's name sits under the middle of its bars.
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x| {
                if (x.fract() - 0.5).abs() < 1e-6 {
                    names.get(x.floor() as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("ms")
            .draw()?;
        for (k, (stage, colour)) in stages.iter().zip(colours).enumerate() {
            let width = 0.8 / stages.len() as f64;
            bars.draw_series(report.strategies.iter().enumerate().map(|(i, r)| {
                let v = r.stages.get(stage).map_or(0.0, |x| x.p50_ms);
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Rectangle::new(
                    [(x0, BAR_FLOOR_MS), (x0 + width, v.max(BAR_FLOOR_MS))],
                    colour.filled(),
                )
            }))?
            .label(*stage)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        }
        bars.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("writing plot {}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points_by_latency() {
        let points = [
            (10.0, 0.5),
            (5.0, 0.6),
            (20.0, 0.9),
            (30.0, 0.8),
            (5.0, 0.6),
        ];
        // (10, 0.5) is beaten by (5, 0.6); (30, 0.8) by (20, 0.9); equal points do not dominate each other.
        assert_eq!(pareto_front(&points), vec![1, 4, 2]);
    }
}
