"""Card photos: from an uploaded picture to what OCR reads off the card.

`images` accepts an upload (format, size and pixel limits; EXIF orientation applied, all
metadata, the location among it, dropped); `store` keeps photos content-addressed on disk;
`locate` finds the card's outline and straightens it; `ocr` runs the OCR engine (RapidOCR's
ONNX models, shipped inside its wheel: nothing is downloaded at run time); `fields` picks the
name, HP, number, set code and illustrator out of the lines read; `read` puts these together
into the `OcrInput` that `cardmint.catalog.identify` takes.
"""
