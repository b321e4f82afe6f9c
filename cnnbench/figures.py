"""Pictures of a run, drawn with PIL: image grids with captions, the confusion matrix, learning curves.

Each function returns a PIL image, which the run writes as PNG and hands to TensorBoard. PIL draws
them in milliseconds; matplotlib took about 3 s per run for the same pictures (its import and
`tight_layout`), more than a short run's training. TensorBoard shows an image scaled down to its
card, about 340 px wide (seen in Chromium at 1400x1000, Images and Time Series tabs alike): the
pictures it gets are drawn about that wide, so their text is not shrunk there.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (110, 110, 110), (225, 225, 225)
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # train, validation: the colours plots usually use
FONT_SIZE = 16
TILE = 96  # an image tile of a grid, in pixels: small images are enlarged to it, big ones shrunk
CARD_WIDTH = 360  # about the width TensorBoard shows an image at


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
        tile = Image.fromarray(picture)
        scale = TILE / max(tile.size)
        # nearest neighbour keeps a 28 px digit's pixels sharp when enlarged; bilinear shrinks smoothly
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                           Image.NEAREST if scale >= 1 else Image.BILINEAR)
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


def line_panel(size: tuple[int, int], title: str, x: Sequence[float],
               series: Sequence[tuple[str, Sequence[float], tuple[int, int, int]]]) -> Image.Image:
    """One line plot: axes with round ticks, a line with a dot per point for each series, a legend."""
    width, height = size
    typeface = font()
    panel = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(panel)
    values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    y_ticks = nice_ticks(min(values, default=0.0), max(values, default=1.0))
    x_ticks = [t for t in nice_ticks(min(x, default=1), max(x, default=1)) if float(t).is_integer()] or [1]
    left, right, top, bottom = 64, width - 14, 30, height - 44
    x_low, x_high = x_ticks[0], max(x_ticks[-1], x_ticks[0] + 1)
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def at(xv: float, yv: float) -> tuple[float, float]:
        return (left + (xv - x_low) / (x_high - x_low) * (right - left),
                bottom - (yv - y_low) / (y_high - y_low) * (bottom - top))

    decimals = max(0, -math.floor(math.log10(y_ticks[1] - y_ticks[0]))) if len(y_ticks) > 1 else 2
    for tick in y_ticks:
        y = at(x_low, tick)[1]
        draw.line((left, y, right, y), fill=LIGHT)
        draw.text((left - 6, y), f"{tick:.{decimals}f}", anchor="rm", font=typeface, fill=GREY)
    for tick in x_ticks:
        x_pixel = at(tick, y_low)[0]
        draw.line((x_pixel, bottom, x_pixel, bottom + 4), fill=GREY)
        draw.text((x_pixel, bottom + 6), f"{tick:g}", anchor="mt", font=typeface, fill=GREY)
    draw.rectangle((left, top, right, bottom), outline=GREY)
    draw.text((left, 6), title, anchor="lt", font=typeface, fill=BLACK)
    draw.text(((left + right) / 2, height - 4), "epoch", anchor="mb", font=typeface, fill=GREY)
    legend_right = right
    for name, ys, colour in reversed(series):  # the legend: above the plot, right-aligned, in one row
        points = [at(xv, yv) for xv, yv in zip(x, ys, strict=True) if yv is not None and math.isfinite(yv)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        draw.text((legend_right, 14), name, anchor="rm", font=typeface, fill=BLACK)
        legend_right -= text_width(name, typeface) + 6
        draw.line((legend_right - 20, 14, legend_right, 14), fill=colour, width=3)
        legend_right -= 34
    return panel


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
