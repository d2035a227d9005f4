//! The picture of a demo run: per region, replication lag and buffer backlog over time, with
//! the outage shaded, so the replay after it is seen at a glance.

use plotters::prelude::*;
use std::path::Path;

/// One region's series: (seconds since start, value).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub region: String,
    /// Lag of the records applied *into* this region (p99 per sample window), ms.
    pub lag_ms: Vec<(f64, f64)>,
    /// Messages waiting in the buffers *towards* this region.
    pub backlog: Vec<(f64, f64)>,
}

pub struct Picture<'a> {
    pub title: String,
    pub series: &'a [Series],
    /// (start, end) of the outage, seconds since start.
    pub outage: Option<(f64, f64)>,
    pub outage_region: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

pub fn draw(picture: &Picture, path: &Path) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(330);
    let end = picture
        .series
        .iter()
        .flat_map(|s| s.lag_ms.iter().chain(&s.backlog))
        .map(|p| p.0)
        .fold(1.0f64, f64::max);
    let max_lag = picture
        .series
        .iter()
        .flat_map(|s| &s.lag_ms)
        .map(|p| p.1)
        .fold(100.0f64, f64::max);
    let max_backlog = picture
        .series
        .iter()
        .flat_map(|s| &s.backlog)
        .map(|p| p.1)
        .fold(1.0f64, f64::max);
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

    for (area, which) in [(top, 0), (bottom, 1)] {
        let (title, ymax, ylabel) = if which == 0 {
            (picture.title.as_str(), max_lag * 1.1, "lag p99 (ms)")
        } else {
            ("", max_backlog * 1.1, "buffer backlog (messages)")
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..ymax)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(ylabel)
            .draw()
            .map_err(|e| err(&e))?;
        if let Some((a, b)) = picture.outage {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.0), (b, ymax)],
                    RGBColor(255, 200, 120).mix(0.35).filled(),
                )))
                .map_err(|e| err(&e))?
                .label(format!(
                    "outage of {}",
                    picture.outage_region.as_deref().unwrap_or("a region")
                ))
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 15, y + 5)],
                        RGBColor(255, 200, 120).filled(),
                    )
                });
        }
        for (i, s) in picture.series.iter().enumerate() {
            let color = colors[i % colors.len()];
            let points = if which == 0 { &s.lag_ms } else { &s.backlog };
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("into {}", s.region))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
