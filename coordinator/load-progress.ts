// Loading a real checkpoint takes minutes (~100 GB): show a progress bar on a
// terminal, periodic log lines otherwise (bytes and tensors loaded, rate).
import cliProgress from 'cli-progress';

export interface LoadProgress {
  tensor(name: string, bytes: number): void;
  done(): void;
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(bytes < 1e8 ? 3 : 2);
}

export function loadProgress(totalBytes: number, totalTensors: number, stream: NodeJS.WriteStream = process.stderr): LoadProgress {
  const start = Date.now();
  let bytes = 0;
  let tensors = 0;
  const rate = () => bytes / 1e6 / Math.max(1e-3, (Date.now() - start) / 1000);
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        // {total} is cli-progress's own token (the bar's total, in bytes here): the GB figure is {totalGb}.
        format: 'loading {bar} {percentage}% | {loaded}/{totalGb} GB | {tensors}/{totalTensors} tensors | {rate} MB/s',
        hideCursor: true,
        clearOnComplete: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(totalBytes, 0, { loaded: gb(0), totalGb: gb(totalBytes), tensors: 0, totalTensors, rate: '0' });
    return {
      tensor(_name, n) {
        bytes += n;
        tensors++;
        bar.update(bytes, { loaded: gb(bytes), tensors, rate: rate().toFixed(0) });
      },
      done() {
        bar.stop();
      },
    };
  }
  let lastLog = Date.now();
  return {
    tensor(_name, n) {
      bytes += n;
      tensors++;
      if (Date.now() - lastLog >= 2000) {
        lastLog = Date.now();
        stream.write(
          `loading: ${gb(bytes)}/${gb(totalBytes)} GB, ${tensors}/${totalTensors} tensors, ${rate().toFixed(0)} MB/s\n`,
        );
      }
    },
    done() {},
  };
}
