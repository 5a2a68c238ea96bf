#!/usr/bin/env python3
"""Renders a terminal capture with colours (`tmux capture-pane -e -p`) to
a PNG, cell by cell, with DejaVu Sans Mono. Used by scripts/screenshots.sh.

    ansi2png.py capture.ans out.png COLUMNS ROWS

Needs Pillow (Debian: apt-get install python3-pil) and the DejaVu fonts
(fonts-dejavu-core).
"""
import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 16

# A dark theme close to common terminal defaults.
FG, BG = (0xD8, 0xDE, 0xE9), (0x1B, 0x1F, 0x27)
BASE = [
    (0x2E, 0x34, 0x40), (0xE0, 0x6C, 0x75), (0x98, 0xC3, 0x79), (0xE5, 0xC0, 0x7B),
    (0x61, 0xAF, 0xEF), (0xC6, 0x78, 0xDD), (0x56, 0xB6, 0xC2), (0xD8, 0xDE, 0xE9),
    (0x5C, 0x63, 0x70), (0xF0, 0x7C, 0x85), (0xA8, 0xD3, 0x89), (0xF5, 0xD0, 0x8B),
    (0x71, 0xBF, 0xFF), (0xD6, 0x88, 0xED), (0x66, 0xC6, 0xD2), (0xFF, 0xFF, 0xFF),
]


def xterm256(n):
    if n < 16:
        return BASE[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[n // 6 % 6], steps[n % 6])
    v = 8 + (n - 232) * 10
    return (v, v, v)


class Pen:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg = None
        self.bg = None
        self.bold = self.dim = self.reverse = self.underline = False

    def sgr(self, params):
        p = [int(x) if x else 0 for x in params.split(";")] if params else [0]
        i = 0
        while i < len(p):
            c = p[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 2:
                self.dim = True
            elif c == 4:
                self.underline = True
            elif c == 7:
                self.reverse = True
            elif c == 22:
                self.bold = self.dim = False
            elif c == 24:
                self.underline = False
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASE[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASE[c - 90 + 8]
            elif c == 39:
                self.fg = None
            elif 40 <= c <= 47:
                self.bg = BASE[c - 40]
            elif 100 <= c <= 107:
                self.bg = BASE[c - 100 + 8]
            elif c == 49:
                self.bg = None
            elif c in (38, 48) and i + 1 < len(p):
                if p[i + 1] == 5 and i + 2 < len(p):
                    col = xterm256(p[i + 2])
                    i += 2
                elif p[i + 1] == 2 and i + 4 < len(p):
                    col = tuple(p[i + 2:i + 5])
                    i += 4
                else:
                    col = None
                if c == 38:
                    self.fg = col
                else:
                    self.bg = col
            i += 1

    def colours(self):
        fg = self.fg or FG
        bg = self.bg or BG
        if self.bold and self.fg in BASE[:8]:
            fg = BASE[BASE.index(self.fg) + 8]
        if self.reverse:
            fg, bg = bg, fg
        if self.dim:
            fg = tuple((a + b) // 2 for a, b in zip(fg, bg))
        return fg, bg


TOKEN = re.compile(r"\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|(.)", re.S)


def parse(text, cols, rows):
    grid = [[(" ", FG, BG, False, False)] * cols for _ in range(rows)]
    pen = Pen()
    for y, line in enumerate(text.split("\n")[:rows]):
        x = 0
        for m in TOKEN.finditer(line):
            if m.group(1) is not None:
                pen.sgr(m.group(1))
            elif m.group(2) is not None and x < cols:
                fg, bg = pen.colours()
                grid[y][x] = (m.group(2), fg, bg, pen.bold, pen.underline)
                x += 1
        # tmux trims trailing blanks; the rest of the row keeps the pen's background
        fg, bg = pen.colours()
        while x < cols and (pen.bg is not None or pen.reverse):
            grid[y][x] = (" ", fg, bg, False, False)
            x += 1
    return grid


def render(grid, out):
    font = ImageFont.truetype(FONT, SIZE)
    bold = ImageFont.truetype(BOLD, SIZE)
    left, top, right, bottom = font.getbbox("M")
    cw = round(font.getlength("M"))
    ch = round(SIZE * 1.3)
    pad = 12
    rows, cols = len(grid), len(grid[0])
    img = Image.new("RGB", (cols * cw + 2 * pad, rows * ch + 2 * pad), BG)
    d = ImageDraw.Draw(img)
    for y, row in enumerate(grid):
        for x, (c, fg, bg, b, u) in enumerate(row):
            px, py = pad + x * cw, pad + y * ch
            if bg != BG:
                d.rectangle([px, py, px + cw - 1, py + ch - 1], fill=bg)
            if c in "█░▏─│┌┐└┘":
                # Block and line characters drawn to fill the cell exactly.
                if c == "█":
                    d.rectangle([px, py + 2, px + cw - 1, py + ch - 3], fill=fg)
                elif c == "░":
                    d.rectangle([px, py + 2, px + cw - 1, py + ch - 3], fill=tuple((a + 2 * b) // 3 for a, b in zip(fg, bg)))
                elif c == "▏":
                    d.line([px, py + 2, px, py + ch - 3], fill=fg, width=2)
                else:
                    mx, my = px + cw // 2, py + ch // 2
                    if c in "─┌┐└┘":
                        x0 = mx if c in "┌└" else px
                        x1 = mx if c in "┐┘" else px + cw
                        d.line([x0, my, x1, my], fill=fg)
                    if c in "│┌┐└┘":
                        y0 = my if c in "┌┐" else py
                        y1 = my if c in "└┘" else py + ch
                        d.line([mx, y0, mx, y1], fill=fg)
                continue
            if c != " ":
                d.text((px, py + (ch - SIZE) // 2 - 1), c, font=bold if b else font, fill=fg)
            if u:
                d.line([px, py + ch - 3, px + cw - 1, py + ch - 3], fill=fg)
    img.save(out)


def main():
    src, out, cols, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(src, encoding="utf-8", errors="replace") as f:
        text = f.read()
    render(parse(text, cols, rows), out)


if __name__ == "__main__":
    main()
