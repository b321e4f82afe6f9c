"""The pictures a run leaves (PIL-drawn): grids with readable captions, the confusion matrix,
learning curves. Readable means: drawn no wider than TensorBoard's image card (about 340-360 px,
seen in Chromium at 1400x1000), so TensorBoard does not shrink their text."""

import numpy as np
import pytest
import torch

from cnnbench.engine.figures import (
    CARD_WIDTH,
    FONT_SIZE,
    confusion_image,
    curves_image,
    image_grid,
    legend_image,
    line_panel,
    log_ticks,
    nice_ticks,
    palette,
    scatter_panel,
    short_number,
)


def ink(image, box) -> int:
    """How many pixels in `box` (left, top, right, bottom) are not white."""
    pixels = np.asarray(image.crop(box).convert("L"))
    return int((pixels < 200).sum())


def test_a_grid_fits_tensorboards_card_and_captions_every_image():
    images = torch.full((7, 1, 28, 28), 2.0)  # normalised white: (2 * 0.25 + 0.5) = 1
    grid = image_grid(images, [["Ankle boot", "-> Sneaker"]] * 7, mean=[0.5], std=[0.25], columns=3)
    assert grid.width <= CARD_WIDTH and FONT_SIZE >= 14
    rows = 3  # 7 images, 3 to a row
    cell_height = grid.height // rows
    for index in range(7):
        left, top = (index % 3) * (grid.width // 3), (index // 3) * cell_height
        caption = (left, top + cell_height - 2 * (FONT_SIZE + 3) - 2, left + grid.width // 3,
                   top + cell_height)
        assert ink(grid, caption) > 50, f"image {index} has no caption"
    empty = (2 * grid.width // 3, 2 * cell_height, grid.width, grid.height)
    assert ink(grid, empty) == 0  # the 8th and 9th places of the last row stay blank


def test_grid_tiles_show_the_images_as_the_eye_sees_them():
    black, white = torch.full((1, 3, 32, 32), -2.0), torch.full((1, 3, 32, 32), 2.0)
    grid = np.asarray(image_grid(torch.cat([black, white]), [["a"], ["b"]], [0.5] * 3, [0.25] * 3))
    cell = grid.shape[1] // 3
    assert (grid[grid.shape[0] // 3, cell // 2] == 0).all()  # black stays black (clamped at 0)
    assert (grid[grid.shape[0] // 3, cell + cell // 2] == 255).all()


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_confusion_matrix_colours_each_row_by_its_share(classes):
    confusion = np.eye(classes, dtype=int) * 90 + 1
    names = [f"class {i}" for i in range(classes)]
    for percent in (False, True):
        image = confusion_image(confusion.tolist(), names, percent=percent)
        assert image.width == image.height  # one cell per class each way, names on both sides
        if classes <= 10 and percent:
            assert image.width <= 1.2 * CARD_WIDTH  # what TensorBoard gets each epoch
    pixels = np.asarray(confusion_image(confusion.tolist(), names).convert("L"))
    assert pixels.min() < 100  # the diagonal is dark


@pytest.mark.parametrize("epochs", [1, 3, 200])
def test_curves_plot_every_epoch(epochs):
    history = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "train_acc": 1 - 1 / (e + 1),
                "val_acc": 1 - 1.1 / (e + 1)} for e in range(1, epochs + 1)]
    image = curves_image(history)
    assert image.size == (1000, 360)
    blue = (np.asarray(image) == (31, 119, 180)).all(-1).sum()
    assert blue > 20  # the train line (and its legend entry) is drawn


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks = nice_ticks(2.3011, 2.3035)
    assert ticks[0] <= 2.3011 and ticks[-1] >= 2.3035 and len(ticks) <= 8
    assert nice_ticks(0.5, 0.5)  # a flat line still gets an axis


def test_a_band_is_shaded_around_its_line_and_a_lone_point_gets_a_bar():
    colour = (31, 119, 180)
    mean, low, high = [0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.6, 0.7, 0.8]
    banded = np.asarray(line_panel((500, 380), "acc", [1, 2, 3], [("", mean, colour)], [(low, high)],
                                   legend=False))
    plain = np.asarray(line_panel((500, 380), "acc", [1, 2, 3], [("", mean, colour)], legend=False))
    tinted = ((banded != plain).any(-1) & (banded > 150).all(-1)).sum()  # light blue where white was
    assert tinted > 2000
    assert (banded == colour).all(-1).sum() > 300  # the line, drawn over its band
    # one epoch: a bar from low to high, in the series' colour, in the middle of a widened axis
    alone = np.asarray(line_panel((500, 380), "acc", [1], [("", [0.5], colour)], [([0.4], [0.6])],
                                  legend=False, x_range=(0, 2)))
    rows, columns = np.nonzero((alone == colour).all(-1))
    assert rows.max() - rows.min() > 100 and abs(columns.mean() - (64 + 486) / 2) < 10


def test_a_scatter_panel_marks_the_front_and_says_when_nothing_was_measured():
    points = [(1e3, 0.9, 0.01, (31, 119, 180)), (1e5, 0.95, None, (255, 127, 14)),
              (1e4, 0.8, 0.02, (44, 160, 44))]
    panel = np.asarray(scatter_panel((340, 380), "best val acc", "parameters", points, front=[0, 1]))
    for colour in (points[0][3], points[1][3], points[2][3]):
        assert (panel == colour).all(-1).sum() > 50
    empty = scatter_panel((340, 380), "best val acc", "MACs", [])
    assert ink(empty, (100, 150, 300, 250)) > 20  # "not measured"


def test_log_ticks_and_their_labels():
    assert log_ticks(61706, 11e6) == [1e4, 1e5, 1e6, 1e7, 1e8]
    assert log_ticks(6422, 6442) == [5e3, 1e4]  # one decade: 2 and 5 times too
    assert log_ticks(1000, 1000) == [1000, 2000]
    assert [short_number(v) for v in (500, 1500, 2e6, 3e9)] == ["500", "1.5k", "2M", "3G"]


def test_palette_colours_are_distinct_and_a_long_legend_wraps():
    assert len(set(palette(30))) == 30
    one_row = legend_image(1000, [("lenet", (0, 0, 0))])
    many = legend_image(1000, [(f"configuration number {i}", colour) for i, colour in enumerate(palette(12))])
    assert many.height >= 3 * one_row.height - 20 and FONT_SIZE >= 14
