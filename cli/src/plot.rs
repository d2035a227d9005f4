//! The picture of a demo run: per region, replication lag and buffer backlog over time, with
//! the outage shaded, so the replay after it is seen at a glance.

use plotters::coord::Shift;
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
    for (area, panel) in [(top, Panel::Lag), (bottom, Panel::Backlog)] {
        draw_panel(&area, panel, picture, end).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The two panels of the picture, one above the other.
#[derive(Clone, Copy)]
enum Panel {
    Lag,
    Backlog,
}

impl Panel {
    fn points(self, series: &Series) -> &[(f64, f64)] {
        match self {
            Panel::Lag => &series.lag_ms,
            Panel::Backlog => &series.backlog,
        }
    }

    /// The top of the y axis: a margin above the largest value, and never below a floor so
    /// that a quiet run is not drawn as noise.
    fn y_max(self, series: &[Series]) -> f64 {
        let floor = match self {
            Panel::Lag => 100.0f64,
            Panel::Backlog => 1.0f64,
        };
        series
            .iter()
            .flat_map(|s| self.points(s))
            .map(|p| p.1)
            .fold(floor, f64::max)
            * 1.1
    }
}

/// What drawing on the SVG backend fails with.
type Error = DrawingAreaErrorKind<std::io::Error>;

/// One panel: the outage shaded, a line per region, and the legend.
fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: Panel,
    picture: &Picture,
    end: f64,
) -> Result<(), Error> {
    let (title, ylabel) = match panel {
        Panel::Lag => (picture.title.as_str(), "lag p99 (ms)"),
        Panel::Backlog => ("", "buffer backlog (messages)"),
    };
    let ymax = panel.y_max(picture.series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(ylabel)
        .draw()?;
    if let Some((a, b)) = picture.outage {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, ymax)],
                RGBColor(255, 200, 120).mix(0.35).filled(),
            )))?
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
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in picture.series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                panel.points(s).iter().copied(),
                color.stroke_width(2),
            ))?
            .label(format!("into {}", s.region))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}
