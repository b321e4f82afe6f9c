"""Pictures of a run, drawn with PIL: image grids with captions, the confusion matrix, learning curves.

Each function returns a PIL image, which the run writes as PNG and hands to TensorBoard. PIL draws
them in milliseconds; matplotlib took about 3 s per run for the same pictures (its import and
`tight_layout`), more than a short run's training. TensorBoard shows an image scaled down to its
card, about 340 px wide (seen in Chromium at 1400x1000, Images and Time Series tabs alike): the
pictures it gets are drawn about that wide, so their text is not shrunk there.
"""

import colorsys
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from cnnbench import files

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (110, 110, 110), (225, 225, 225)
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # train, validation: the colours plots usually use
FONT_SIZE = 16
TILE = 96  # an image tile of a grid, in pixels: small images are enlarged to it, big ones shrunk
CARD_WIDTH = 360  # about the width TensorBoard shows an image at


def write_png(path: Path, image: Image.Image, software: str = "cnnbench") -> None:
    """A picture as a PNG file, whole or not at all: a reader never sees half of one, and a link
    at its name is replaced, never written through. It names the tool that drew it (a tEXt chunk
    "Software", which files.written_by reads)."""
    marker = PngInfo()
    marker.add_text("Software", software)
    files.write_whole(path, lambda file: image.save(file, format="PNG", pnginfo=marker))


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """Pillow's own scalable font (no font files needed on the machine)."""
    return ImageFont.load_default(size=size)


def text_width(text: str, typeface: ImageFont.ImageFont) -> int:
    left, _, right, _ = typeface.getbbox(text)
    return right - left


def fit_text(text: str, width: int, typeface: ImageFont.ImageFont) -> str:
    """`text`, cut with an ellipsis where it would be wider than `width` pixels."""
    if text_width(text, typeface) <= width:
        return text
    while text and text_width(text + "…", typeface) > width:
        text = text[:-1]
    return text + "…"


def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised N x C x H x W images back to N x H x W x 3 uint8, as the eye sees them."""
    pixels = images.float().cpu() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    pixels = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels.permute(0, 2, 3, 1).numpy()


def _tile(values: np.ndarray, size: int) -> Image.Image:
    """An H x W (grey) or H x W x 3 array of 0..255 as an RGB tile whose longer side is `size`
    pixels: nearest neighbour keeps a 28 px digit's pixels (a 3x3 kernel's nine squares) sharp when
    enlarged; bilinear shrinks smoothly."""
    tile = Image.fromarray(np.nan_to_num(values).astype(np.uint8))  # (weights gone NaN: black, not a warning)
    scale = size / max(tile.size)
    return tile.convert("RGB").resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                                      Image.NEAREST if scale >= 1 else Image.BILINEAR)


def image_grid(images: torch.Tensor, captions: Sequence[Sequence[str]], mean: Sequence[float],
               std: Sequence[float], columns: int = 3) -> Image.Image:
    """Normalised images as the eye sees them, each above its caption lines, `columns` to a row."""
    pixels = to_pixels(images, mean, std)
    typeface = font()
    line_height = FONT_SIZE + 3
    lines = max((len(caption) for caption in captions), default=1)
    cell_width, cell_height = CARD_WIDTH // columns, TILE + 10 + lines * line_height
    rows = max(1, math.ceil(len(pixels) / columns))
    grid = Image.new("RGB", (columns * cell_width, rows * cell_height), WHITE)
    draw = ImageDraw.Draw(grid)
    for index, (picture, caption) in enumerate(zip(pixels, captions, strict=True)):
        left, top = (index % columns) * cell_width, (index // columns) * cell_height
        tile = _tile(picture, TILE)
        grid.paste(tile, (left + (cell_width - tile.width) // 2, top + 4 + (TILE - tile.height) // 2))
        for number, line in enumerate(caption):
            line = fit_text(line, cell_width - 4, typeface)
            x = left + (cell_width - text_width(line, typeface)) // 2
            draw.text((x, top + TILE + 6 + number * line_height), line, fill=BLACK, font=typeface)
    return grid


def confusion_image(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                    percent: bool = False) -> Image.Image:
    """Rows: true class, columns: predicted class; each row coloured by its share of the class,
    with the counts written in the cells (up to 20 classes), or the shares in percent: three
    digits at most, so the cells stay small enough for TensorBoard's card."""
    counts = np.asarray(confusion, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(classes)
    digits = 3 if percent else len(str(int(counts.max(initial=0))))
    cell = max(8, min(44, 7 + 7 * digits, 520 // max(n, 1)))
    typeface, small = font(), font(max(9, min(FONT_SIZE - 2, cell // 2)))
    names = [fit_text(name, 170, typeface) for name in classes]
    label_width = max(text_width(name, typeface) for name in names) + 12
    header = label_width  # column names are written upwards, as long as the row names
    left, top = label_width + FONT_SIZE + 8, header + FONT_SIZE + 8
    image = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), WHITE)
    draw = ImageDraw.Draw(image)
    for row in range(n):
        for column in range(n):
            share = float(shares[row, column])
            colour = tuple(round(255 - share * (255 - c)) for c in (8, 48, 107))  # white to dark blue
            box = (left + column * cell, top + row * cell, left + (column + 1) * cell, top + (row + 1) * cell)
            draw.rectangle(box, fill=colour, outline=LIGHT)
            if n <= 20:
                number = f"{100 * share:.0f}" if percent else str(int(counts[row, column]))
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), number, anchor="mm", font=small,
                          fill=WHITE if share > 0.5 else BLACK)
        draw.text((left - 6, top + row * cell + cell / 2), names[row], anchor="rm", font=typeface, fill=BLACK)
    # column names: drawn on their own strip, turned to read upwards
    strip = Image.new("RGB", (header, n * cell), WHITE)
    strip_draw = ImageDraw.Draw(strip)
    for column in range(n):
        strip_draw.text((4, column * cell + cell / 2), names[column], anchor="lm", font=typeface, fill=BLACK)
    image.paste(strip.rotate(90, expand=True), (left, FONT_SIZE + 4))
    draw.text((left + n * cell / 2, 2), "predicted" + (" (% of each true class)" if percent else ""),
              anchor="mt", font=typeface, fill=GREY)
    true_label = Image.new("RGB", (n * cell, FONT_SIZE + 4), WHITE)
    ImageDraw.Draw(true_label).text((n * cell / 2, 0), "true", anchor="mt", font=typeface, fill=GREY)
    image.paste(true_label.rotate(90, expand=True), (2, top))
    return image


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if high <= low:
        high = low + (abs(low) or 1) * 0.1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


Colour = tuple[int, int, int]
# One colour per configuration of a sweep: the ten plots usually use (tab10), then more, evenly spread.
PALETTE = [BLUE, ORANGE, (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
           (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def palette(count: int) -> list[Colour]:
    """`count` distinct colours: PALETTE's, then hues between them."""
    extra = [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.8, 0.75))
             for i in range(max(0, count - len(PALETTE)))]
    return (PALETTE + [c for c in extra if c not in PALETTE])[:count] if count else []


def _y_axis(draw: ImageDraw.ImageDraw, ticks: list[float], to_y, left: int, right: int,
            typeface: ImageFont.ImageFont) -> None:
    # grid lines across the plot, each labelled with as many decimals as the step between them needs
    decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0]))) if len(ticks) > 1 else 2
    for tick in ticks:
        y = to_y(tick)
        draw.line((left, y, right, y), fill=LIGHT)
        draw.text((left - 6, y), f"{tick:.{decimals}f}", anchor="rm", font=typeface, fill=GREY)


def line_panel(size: tuple[int, int], title: str, x: Sequence[float],
               series: Sequence[tuple[str, Sequence[float], tuple[int, int, int]]],
               bands: Sequence[tuple[Sequence[float | None], Sequence[float | None]] | None] | None = None,
               legend: bool = True, x_range: tuple[float, float] | None = None,
               x_label: str = "epoch") -> Image.Image:
    """One line plot: axes with round ticks, a line with a dot per point for each series, a legend.

    `bands`, one per series (or None): (low, high) values shaded between in the series' colour (an
    error bar where a point has no neighbour); `legend=False` leaves the legend to the caller (a
    sweep's names do not fit in one row); `x_range` widens the epoch axis (one epoch alone);
    `x_label` names the axis (epochs by default).
    """
    width, height = size
    typeface = font()
    panel = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(panel)
    values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    values += [v for band in bands or () if band for edge in band for v in edge
               if v is not None and math.isfinite(v)]
    y_ticks = nice_ticks(min(values, default=0.0), max(values, default=1.0))
    x_span = x_range or (min(x, default=1), max(x, default=1))
    x_ticks = [t for t in nice_ticks(*x_span) if float(t).is_integer()] or [1]
    left, right, top, bottom = 64, width - 14, 30, height - 44
    x_low, x_high = x_ticks[0], max(x_ticks[-1], x_ticks[0] + 1)
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def at(xv: float, yv: float) -> tuple[float, float]:
        return (left + (xv - x_low) / (x_high - x_low) * (right - left),
                bottom - (yv - y_low) / (y_high - y_low) * (bottom - top))

    _y_axis(draw, y_ticks, lambda tick: at(x_low, tick)[1], left, right, typeface)
    if bands:
        panel = _draw_bands(panel, x, series, bands, at)
        draw = ImageDraw.Draw(panel)
    for tick in x_ticks:
        x_pixel = at(tick, y_low)[0]
        draw.line((x_pixel, bottom, x_pixel, bottom + 4), fill=GREY)
        draw.text((x_pixel, bottom + 6), f"{tick:g}", anchor="mt", font=typeface, fill=GREY)
    draw.rectangle((left, top, right, bottom), outline=GREY)
    draw.text((left, 6), title, anchor="lt", font=typeface, fill=BLACK)
    draw.text(((left + right) / 2, height - 4), x_label, anchor="mb", font=typeface, fill=GREY)
    legend_right = right
    for name, ys, colour in reversed(series):  # the legend: above the plot, right-aligned, in one row
        points = [at(xv, yv) for xv, yv in zip(x, ys, strict=True) if yv is not None and math.isfinite(yv)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        if not legend:
            continue
        draw.text((legend_right, 14), name, anchor="rm", font=typeface, fill=BLACK)
        legend_right -= text_width(name, typeface) + 6
        draw.line((legend_right - 20, 14, legend_right, 14), fill=colour, width=3)
        legend_right -= 34
    return panel


def _draw_bands(panel: Image.Image, x: Sequence[float], series, bands, at) -> Image.Image:
    """Each series' band, translucent so that those behind show through; a bar where a point is alone."""
    layer = Image.new("RGBA", panel.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for (_, _, colour), band in zip(series, bands, strict=True):
        if not band:
            continue
        low, high = band
        stretches: list[list[tuple[int, float, float, float]]] = [[]]  # neighbouring points: one band each
        for index, (xv, lo, hi) in enumerate(zip(x, low, high, strict=True)):
            if lo is None or hi is None:
                continue
            if stretches[-1] and stretches[-1][-1][0] != index - 1:
                stretches.append([])
            stretches[-1].append((index, xv, lo, hi))
        for stretch in stretches:
            if len(stretch) > 1:
                outline = ([at(xv, hi) for _, xv, _, hi in stretch]
                           + [at(xv, lo) for _, xv, lo, _ in reversed(stretch)])
                draw.polygon(outline, fill=(*colour, 56))
            elif stretch:
                (_, xv, lo, hi), = stretch
                (px, top), (_, bottom) = at(xv, hi), at(xv, lo)
                for y in (top, bottom):
                    draw.line((px - 6, y, px + 6, y), fill=(*colour, 255), width=2)
                draw.line((px, top, px, bottom), fill=(*colour, 255), width=2)
    return Image.alpha_composite(panel.convert("RGBA"), layer).convert("RGB")


def log_ticks(low: float, high: float) -> list[float]:
    """Round numbers covering [low, high] on a log scale: powers of ten, and 2 and 5 times them
    when the range spans two decades or less."""
    low_power, high_power = math.floor(math.log10(low)), math.ceil(math.log10(high))
    multiples = (1,) if high_power - low_power > 2 else (1, 2, 5)
    ticks = [m * 10.0**power for power in range(low_power, high_power + 1) for m in multiples]
    first = max(t for t in ticks if t <= low)
    last = min((t for t in ticks if t >= high), default=ticks[-1])
    if first == last:
        last = next(t for t in ticks if t > first)
    return [t for t in ticks if first <= t <= last]


def short_number(value: float) -> str:
    """1500 -> 1.5k, 2e6 -> 2M: axis labels that fit."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def scatter_panel(size: tuple[int, int], title: str, x_label: str,
                  points: Sequence[tuple[float, float, float | None, Colour]], front: Sequence[int] = ()
                  ) -> Image.Image:
    """Points (x on a log scale, y, ± error or None, colour), each with its error bar; the points
    `front` names joined by a line in the order of x, each ringed (a Pareto front)."""
    width, height = size
    typeface = font()
    panel = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(panel)
    left, right, top, bottom = 64, width - 14, 30, height - 44
    draw.text((left, 6), title, anchor="lt", font=typeface, fill=BLACK)
    draw.text(((left + right) / 2, height - 4), x_label, anchor="mb", font=typeface, fill=GREY)
    usable = [p for p in points if p[0] > 0 and math.isfinite(p[1])]
    if not usable:
        draw.rectangle((left, top, right, bottom), outline=GREY)
        draw.text(((left + right) / 2, (top + bottom) / 2), "not measured", anchor="mm", font=typeface,
                  fill=GREY)
        return panel
    ys = [y + sign * (err or 0) for _, y, err, _ in usable for sign in (-1, 1)]
    y_ticks = nice_ticks(min(ys), max(ys))
    x_ticks = log_ticks(min(p[0] for p in usable), max(p[0] for p in usable))
    # a little room on both sides, so that no point sits on the frame
    x_low, x_high = math.log10(x_ticks[0]) - 0.05, math.log10(x_ticks[-1]) + 0.05

    def at(xv: float, yv: float) -> tuple[float, float]:
        return (left + (math.log10(xv) - x_low) / (x_high - x_low) * (right - left),
                bottom - (yv - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top))

    _y_axis(draw, y_ticks, lambda tick: at(x_ticks[0], tick)[1], left, right, typeface)
    for tick in x_ticks:
        x_pixel = at(tick, y_ticks[0])[0]
        draw.line((x_pixel, bottom, x_pixel, bottom + 4), fill=GREY)
        draw.text((x_pixel, bottom + 6), short_number(tick), anchor="mt", font=typeface, fill=GREY)
    draw.rectangle((left, top, right, bottom), outline=GREY)
    on_front = sorted((points[i] for i in front if points[i] in usable), key=lambda p: p[0])
    if len(on_front) > 1:
        draw.line([at(p[0], p[1]) for p in on_front], fill=BLACK, width=2)
    for xv, yv, err, colour in usable:
        px, py = at(xv, yv)
        if err:
            (_, high), (_, low) = at(xv, yv + err), at(xv, yv - err)
            draw.line((px, high, px, low), fill=colour, width=2)
            for y in (high, low):
                draw.line((px - 5, y, px + 5, y), fill=colour, width=2)
        draw.ellipse((px - 6, py - 6, px + 6, py + 6), fill=colour)
    for xv, yv, _, _ in on_front:
        px, py = at(xv, yv)
        draw.ellipse((px - 10, py - 10, px + 10, py + 10), outline=BLACK, width=2)
    return panel


def wrap_text(text: str, width: int, typeface: ImageFont.ImageFont) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken between words."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", typeface) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(fit_text(word, width, typeface))
    return lines


def legend_image(width: int, entries: Sequence[tuple[str, Colour]]) -> Image.Image:
    """A legend as wide as `width`: a line and dot in each entry's colour, then its name, entries
    flowing in rows."""
    typeface, row_height = font(), FONT_SIZE + 12
    placed, x, y = [], 10, 0
    for name, colour in entries:
        name = fit_text(name, width - 60, typeface)
        size = 34 + text_width(name, typeface) + 24
        if x > 10 and x + size > width:
            x, y = 10, y + row_height
        placed.append((x, y, name, colour))
        x += size
    image = Image.new("RGB", (width, y + row_height + 6), WHITE)
    draw = ImageDraw.Draw(image)
    for x, y, name, colour in placed:
        middle = y + row_height // 2 + 3
        draw.line((x, middle, x + 26, middle), fill=colour, width=3)
        draw.ellipse((x + 9, middle - 4, x + 17, middle + 4), fill=colour)
        draw.text((x + 34, middle), name, anchor="lm", font=typeface, fill=BLACK)
    return image


def stack(images: Sequence[Image.Image], across: bool = False) -> Image.Image:
    """`images` one above another (or side by side, `across`), on white."""
    width = sum(i.width for i in images) if across else max(i.width for i in images)
    height = max(i.height for i in images) if across else sum(i.height for i in images)
    canvas = Image.new("RGB", (width, height), WHITE)
    offset = 0
    for image in images:
        canvas.paste(image, (offset, 0) if across else (0, offset))
        offset += image.width if across else image.height
    return canvas


def curves_image(history: Sequence[dict]) -> Image.Image:
    """Loss and accuracy per epoch, train and validation: the plot the course notebooks draw."""
    epochs = [record["epoch"] for record in history]
    panels = [line_panel((500, 360), name, epochs,
                         [("train", [r[f"train_{key}"] for r in history], BLUE),
                          ("validation", [r[f"val_{key}"] for r in history], ORANGE)])
              for key, name in (("loss", "loss"), ("acc", "accuracy"))]
    image = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), WHITE)
    for index, panel in enumerate(panels):
        image.paste(panel, (index * panels[0].width, 0))
    return image


def _spread(values: torch.Tensor) -> np.ndarray:
    """Values stretched to 0..255 by their own minimum and maximum (a flat map is mid-grey)."""
    values = values.float().cpu()
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else torch.full_like(values, 0.5)
    return (scaled * 255).round().numpy()


def filters_caption(name: str, weights: torch.Tensor) -> str:
    """`conv1: 64 filters, 3x7x7`: the layer, its filter count and shape (in x kh x kw), and how a
    layer that reads neither grey nor RGB is shown."""
    count, inputs, height, width = weights.shape
    return f"{name}: {count} filters, {inputs}x{height}x{width}" + ("" if inputs in (1, 3) else " (mean over inputs)")


def filters_image(name: str, weights: torch.Tensor, limit: int = 64, columns: int = 8) -> Image.Image:
    """The first `limit` filters (out x in x kh x kw) of a convolution, `columns` to a row: colour
    for a layer that reads RGB, grey otherwise (the mean over its inputs). Each filter is stretched
    by its own largest weight, with zero mid-grey, so that its pattern shows whatever its scale."""
    title = filters_caption(name, weights)
    weights = weights[:limit].float().cpu()
    if weights.shape[1] != 3:
        weights = weights.mean(1, keepdim=True)
    largest = weights.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    pixels = ((weights / largest + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    typeface, cell = font(), CARD_WIDTH // columns
    title = fit_text(title, CARD_WIDTH - 8, typeface)
    rows = math.ceil(len(pixels) / columns)
    image = Image.new("RGB", (columns * cell, FONT_SIZE + 10 + rows * cell), WHITE)
    ImageDraw.Draw(image).text((4, 4), title, font=typeface, fill=BLACK)
    for index, kernel in enumerate(pixels):
        tile = _tile(kernel if kernel.shape[-1] == 3 else kernel[..., 0], cell - 4)
        image.paste(tile, ((index % columns) * cell + 2, FONT_SIZE + 10 + (index // columns) * cell + 2))
    return image


def feature_maps_image(picture: np.ndarray, stages: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
                       columns: int = 8) -> Image.Image:
    """One image (H x W x 3 uint8) and, a row per stage, its strongest feature maps: each stage's
    (name, C x H x W maps, the channels to show), each map stretched by its own range."""
    typeface, cell, line = font(), CARD_WIDTH // columns, FONT_SIZE + 6
    head = 2 * cell  # the image itself, two tiles high
    image = Image.new("RGB", (columns * cell, head + 8 + len(stages) * (line + cell)), WHITE)
    draw = ImageDraw.Draw(image)
    image.paste(_tile(picture, head - 4), (2, 2))
    draw.text((head + 8, head // 2), "strongest maps", anchor="lm", font=typeface, fill=GREY)
    top = head + 8
    for name, maps, shown in stages:
        words = f"{name}: {len(shown)} of {maps.shape[0]}, {maps.shape[-2]}x{maps.shape[-1]}"
        draw.text((4, top), fit_text(words, CARD_WIDTH - 8, typeface), font=typeface, fill=BLACK)
        for column, channel in enumerate(shown.tolist()):
            image.paste(_tile(_spread(maps[channel]), cell - 4), (column * cell + 2, top + line))
        top += line + cell
    return image


def gradient_flow_image(norms: dict[str, float]) -> Image.Image:
    """Each layer's gradient norm (log10), from the input's layer to the output's: a line falling
    towards the input is the vanishing gradient."""
    layers = list(norms)
    x = list(range(1, len(layers) + 1))
    logs = [math.log10(value) if value > 0 else None for value in norms.values()]
    ends = f"layer: {fit_text(layers[0], 110, font())} ... {fit_text(layers[-1], 110, font())}" if layers else "layer"
    # drawn as wide as TensorBoard's card, so its text is not shrunk there
    return line_panel((CARD_WIDTH, 260), "gradient norm per layer (log10)", x, [("", logs, BLUE)], legend=False,
                      x_label=ends)
